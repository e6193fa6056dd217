// Mentions in a message's text, as DOM nodes: the text split around each `@name` the server
// recorded as a mention (never parsed as HTML). The pattern is the server's
// (chat/mentions.py): an @ that does not continue a word, then a username.
const MENTION = /(?<![A-Za-z0-9_.\-@])@([A-Za-z0-9_.\-]{3,32})/g;

// The names a message mentions, in lower case (usernames are unique ignoring case).
export function mentionsOf(message) {
  return new Set((message.mentions || []).map((name) => name.toLowerCase()));
}

// Text nodes and, for each mention, a span holding it; `me` (lower case) is marked apart.
export function bodyNodes(body, mentioned, me) {
  if (mentioned.size === 0) return [document.createTextNode(body)];
  const nodes = [];
  let from = 0;
  for (const match of body.matchAll(MENTION)) {
    const name = match[1].toLowerCase();
    if (!mentioned.has(name)) continue;
    if (match.index > from) nodes.push(document.createTextNode(body.slice(from, match.index)));
    const span = document.createElement("span");
    span.className = name === me ? "mention me" : "mention";
    span.textContent = match[0];
    nodes.push(span);
    from = match.index + match[0].length;
  }
  if (from < body.length) nodes.push(document.createTextNode(body.slice(from)));
  return nodes;
}
