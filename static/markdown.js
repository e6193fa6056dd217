// A message's safe Markdown, as DOM nodes built one by one (never parsed as HTML): **bold**,
// *italic*, `code`, ``` code blocks ```, > quotes, [text](url) and bare links. Only http(s)
// and mailto links become links, and they open in a new tab without a way back to this page
// (rel="noopener noreferrer"). Whatever is not Markdown stays text, as typed.

const FENCE = /^```/;
const QUOTE = /^> ?/;
// One inline token, the first that starts at the earliest place: a code span; a link with
// its text; a bare link (a trailing full stop, comma, bracket or quote is not part of it);
// bold; italic (not around spaces, so `2 * 3 * 4` stays as it is).
const INLINE = new RegExp([
  "`([^`\\n]+)`",
  "\\[([^\\]\\n]+)\\]\\(((?:https?://|mailto:)[^\\s()]+)\\)",
  "((?:https?://|mailto:)[^\\s<>]*[^\\s<>.,;:!?)\\]'\"])",
  "\\*\\*(?!\\s)([^*\\n]+?)(?<!\\s)\\*\\*",
  "\\*(?!\\s)([^*\\n]+?)(?<!\\s)\\*",
].join("|"), "g");
const SAFE_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);

// The link a URL makes, or null if it is not one a page may open.
export function safeHref(raw) {
  try {
    const url = new URL(raw);
    return SAFE_PROTOCOLS.has(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

function link(href, children) {
  const a = document.createElement("a");
  a.href = href;
  a.rel = "noopener noreferrer";
  a.target = "_blank";
  a.append(...children);
  return a;
}

function element(tag, children) {
  const el = document.createElement(tag);
  el.append(...children);
  return el;
}

// Inline Markdown of one run of text; `text(s)` turns plain runs into nodes (mentions).
// Inside a link's text there are no further links.
function inline(source, text, inLink = false) {
  const nodes = [];
  let from = 0;
  for (const match of source.matchAll(INLINE)) {
    const [whole, code, label, target, bare, bold, italic] = match;
    let node = null;
    if (code !== undefined) {
      node = element("code", [code]);
    } else if (label !== undefined) {
      const href = safeHref(target);
      if (href && !inLink) node = link(href, inline(label, text, true));
    } else if (bare !== undefined) {
      const href = safeHref(bare);
      if (href && !inLink) node = link(href, [bare]);
    } else if (bold !== undefined) {
      node = element("strong", inline(bold, text, inLink));
    } else if (italic !== undefined) {
      node = element("em", inline(italic, text, inLink));
    }
    if (node === null) continue;  // not safe to make a link of: stays text
    if (match.index > from) nodes.push(...text(source.slice(from, match.index)));
    nodes.push(node);
    from = match.index + whole.length;
  }
  if (from < source.length) nodes.push(...text(source.slice(from)));
  return nodes;
}

// The nodes of a whole message. Blocks: code fences (their text as is), runs of quoted
// lines, and everything else with its line breaks kept (the list shows them: pre-wrap).
export function markdownNodes(body, text = (s) => [document.createTextNode(s)]) {
  const lines = body.split("\n");
  const nodes = [];
  let plain = [];
  const flushPlain = () => {
    if (plain.length) nodes.push(...inline(plain.join("\n"), text));
    plain = [];
  };
  for (let i = 0; i < lines.length; i += 1) {
    const line = lines[i];
    if (FENCE.test(line)) {
      const end = lines.findIndex((l, j) => j > i && FENCE.test(l));
      if (end !== -1) {
        flushPlain();
        const code = element("code", [lines.slice(i + 1, end).join("\n")]);
        nodes.push(element("pre", [code]));
        i = end;
        continue;
      }
    }
    if (QUOTE.test(line)) {
      flushPlain();
      const quoted = [];
      while (i < lines.length && QUOTE.test(lines[i])) {
        quoted.push(lines[i].replace(QUOTE, ""));
        i += 1;
      }
      i -= 1;
      nodes.push(element("blockquote", inline(quoted.join("\n"), text)));
      continue;
    }
    plain.push(line);
  }
  flushPlain();
  return nodes;
}
