// The composer: a multi-line box (Enter sends, Shift+Enter breaks the line), which grows with
// its text up to a limit and then scrolls; a counter near the server's length limit instead
// of cutting the text silently; and a draft per room, kept in localStorage, so that a reload
// or signing in again finds the text where it was.

const DRAFT_PREFIX = "chat.draft.";
// The counter shows from this share of the limit on.
const COUNTER_FROM = 0.8;
// The box grows up to this many pixels, then scrolls.
const MAX_HEIGHT_PX = 200;

// Characters as the server counts them (code points, not UTF-16 units).
export function length(text) {
  let n = 0;
  for (const _ of text) n += 1;
  return n;
}

export function draftKey(user, room) {
  return `${DRAFT_PREFIX}${encodeURIComponent(user.toLowerCase())}.${encodeURIComponent(room)}`;
}

// `send(body)` is called with the trimmed text; it returns whether the text was taken (the
// box and the draft are then emptied). `problem(text)` shows a refusal (or clears it, "").
export function composer({ form, input, counter, user, room, max, send, problem, typed }) {
  const key = draftKey(user, room);
  const fmt = new Intl.NumberFormat();

  function grow() {
    if (!input.value) {
      // One line, whatever the placeholder's length.
      input.style.height = "";
      input.classList.remove("scrolls");
      return;
    }
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight + 2, MAX_HEIGHT_PX)}px`;
    input.classList.toggle("scrolls", input.scrollHeight + 2 > MAX_HEIGHT_PX);
  }

  function count() {
    const n = length(input.value.trim());
    const over = n - max;
    counter.hidden = n < max * COUNTER_FROM;
    counter.classList.toggle("over", over > 0);
    counter.textContent = over > 0
      ? `${fmt.format(over)} characters over the limit of ${fmt.format(max)}`
      : `${fmt.format(n)} / ${fmt.format(max)}`;
    input.setAttribute("aria-invalid", String(over > 0));
    return over;
  }

  function saveDraft() {
    try {
      if (input.value) localStorage.setItem(key, input.value);
      else localStorage.removeItem(key);
    } catch {
      // Storage full or refused: the draft lives in the box only.
    }
  }

  function submit() {
    const body = input.value.trim();
    if (!body) return;
    const over = count();
    if (over > 0) {
      problem(`Not sent: ${fmt.format(over)} characters too long (at most ${fmt.format(max)}). ` +
        "Shorten it, or split it in two.");
      return;
    }
    if (!send(body)) return;
    input.value = "";
    saveDraft();
    count();
    grow();
    problem("");
  }

  input.addEventListener("keydown", (event) => {
    // Enter while an input method composes a character belongs to the input method.
    if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
    event.preventDefault();
    submit();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  input.addEventListener("input", () => {
    saveDraft();
    count();
    grow();
    typed();
  });
  // Another tab of the same room typed into the same draft.
  window.addEventListener("storage", (event) => {
    if (event.key !== key || document.activeElement === input) return;
    input.value = event.newValue || "";
    count();
    grow();
  });

  const draft = localStorage.getItem(key);
  if (draft) input.value = draft;
  count();
  grow();

  return {
    // A refused message's text back into the box, when the box is empty.
    restore(text) {
      if (input.value !== "") return false;
      input.value = text;
      saveDraft();
      count();
      grow();
      return true;
    },
  };
}
