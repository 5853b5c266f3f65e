// The sign-in form: log in, or create an account (with the password typed twice). What the API
// refuses is shown in its own words, one line per field (a too-short password says so).
import { explain, signIn } from "./api.ts";
import { $, el } from "./dom.ts";

const form = $<HTMLFormElement>("#auth");
const errors = $("#auth-error");

type Mode = "login" | "register";

function setMode(mode: Mode): void {
  form.dataset.mode = mode;
  for (const node of form.querySelectorAll<HTMLElement>("[data-for]")) node.hidden = node.dataset.for !== mode;
  form.querySelector<HTMLInputElement>("[name=password]")!.autocomplete = mode === "register" ? "new-password" : "current-password";
  showErrors([]);
}

/** The lines of #auth-error (empty: cleared). */
export function showErrors(lines: string[]): void {
  errors.replaceChildren(...lines.map((line) => el("p", "", line)));
}

/** Wires the form; `signedIn` runs once the API has answered with a session. */
export function authForm(signedIn: () => void): void {
  setMode("login");
  form.addEventListener("click", (event) => {
    const action = (event.target as Element).closest<HTMLElement>("button[data-action^=mode-]")?.dataset.action;
    if (action) setMode(action === "mode-register" ? "register" : "login");
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const mode: Mode = form.dataset.mode === "register" ? "register" : "login";
    const data = new FormData(form);
    const [username, password, confirm] = ["username", "password", "confirm"].map((name) => String(data.get(name) ?? ""));
    if (mode === "register" && password !== confirm) return showErrors(["The two passwords differ"]);
    showErrors([]);
    try {
      await signIn(mode, username!, password!);
      form.reset();
      setMode("login");
      signedIn();
    } catch (error) {
      showErrors(explain(error));
    }
  });
}
