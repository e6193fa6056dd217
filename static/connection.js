// The connection banner: shown while the room's socket is away, with why, when the page will
// try again by itself (every wait is jittered: static/backoff.js), and "Retry now".

export function connectionBanner({ banner, message, countdown, retry, onRetry }) {
  let tick = null;
  let at = 0;

  function clearTick() {
    clearInterval(tick);
    tick = null;
  }

  function showCountdown() {
    const secs = Math.max(0, Math.ceil((at - Date.now()) / 1000));
    countdown.textContent = secs > 0 ? `Trying again in ${secs} s.` : "Trying again…";
  }

  retry.addEventListener("click", () => {
    clearTick();
    countdown.textContent = "Trying again…";
    onRetry();
  });

  return {
    // Away: `text` says why (written once, for the live region); `retryAt` (a Date.now()
    // time) when the page tries again by itself, or null for never.
    offline(text, retryAt) {
      if (message.textContent !== text) message.textContent = text;
      banner.hidden = false;
      clearTick();
      if (retryAt === null) {
        countdown.textContent = "";
        return;
      }
      at = retryAt;
      showCountdown();
      tick = setInterval(showCountdown, 1000);
    },
    online() {
      clearTick();
      banner.hidden = true;
      message.textContent = "";
      countdown.textContent = "";
    },
  };
}
