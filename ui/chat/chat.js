// Copy an answer: the text of the .kb-answer before the clicked .kb-copy button, as shown.
document.addEventListener("click", async (event) => {
  const button = event.target instanceof Element ? event.target.closest("button.kb-copy") : null;
  if (!button) return;
  event.preventDefault();
  let answer = button.previousElementSibling;
  while (answer && !answer.classList.contains("kb-answer")) answer = answer.previousElementSibling;
  if (!answer) return;
  try {
    await navigator.clipboard.writeText(answer.innerText);
    button.classList.add("kb-copied");
    setTimeout(() => button.classList.remove("kb-copied"), 1500);
  } catch (error) {
    console.warn("copy failed", error);
  }
});
