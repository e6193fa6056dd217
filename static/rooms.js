// The rooms page: the "New message" dialog. The form in it posts to /dms like any form;
// this only opens and closes it.
const dialog = document.getElementById("new-message-dialog");
const opener = document.getElementById("new-message");
const cancel = document.getElementById("new-message-cancel");
const input = document.getElementById("dm-users");

opener.addEventListener("click", () => {
  dialog.showModal();
  input.focus();
});
cancel.addEventListener("click", () => {
  dialog.close();
  opener.focus();
});
// Sent back with an error: the server rendered it open; open it as the modal it is.
if (dialog.open) {
  dialog.close();
  dialog.showModal();
  input.focus();
}
