// Starts Swagger UI on /docs. A file, not an inline script: the page's CSP allows none.
"use strict";

const root = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: root.dataset.openapiUrl,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  // Off: with it on, every operation's path is a link inside the operation's button, which
  // assistive technology cannot reach (axe-core's nested-interactive).
  deepLinking: false,
  presets: [SwaggerUIBundle.presets.apis],
});

// Swagger UI's page as assistive technology needs it (axe-core): the groups of operations
// and the schemas are headings one level under the page's h1, and every part outside the
// operations' own landmark is a named region. Swagger UI draws parts anew at times, so
// they are watched.
const REGIONS = [
  [".information-container", "About the API"],
  [".scheme-container", "Authorization"],
  ["section.models", "Schemas"],
];

function accessible() {
  for (const heading of root.querySelectorAll(
    "h3.opblock-tag:not([aria-level]), section.models > h4:not([aria-level])")) {
    heading.setAttribute("role", "heading");
    heading.setAttribute("aria-level", "2");
  }
  for (const [selector, label] of REGIONS) {
    for (const part of root.querySelectorAll(`${selector}:not([role])`)) {
      part.setAttribute("role", "region");
      part.setAttribute("aria-label", label);
    }
  }
}
new MutationObserver(accessible).observe(root, { childList: true, subtree: true });
