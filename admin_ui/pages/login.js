// Login: the AUTH_KEY is checked against the API and then kept in sessionStorage (gone when the tab closes).
import { api, auth } from "../api.js";
import { field, h } from "../dom.js";
import { navigate } from "../nav.js";

export async function render(main) {
  const input = h("input", { type: "password", name: "auth_key", autocomplete: "current-password", required: true });
  const error = h("div", { class: "alert error", role: "alert", hidden: true });
  const submit = h("button", { type: "submit", class: "btn primary" }, "Log in");
  const form = h(
    "form",
    { class: "card login-card", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, h("img", { src: "favicon.svg", alt: "", width: 28, height: 28 }), " gptload"),
    h("p", { class: "muted" }, "Gemini key-pool proxy — admin console"),
    // A username field (hidden) lets password managers and Chromium's form checks pair the password with an account.
    h("input", {
      type: "text",
      name: "username",
      autocomplete: "username",
      value: "admin",
      hidden: true,
      "aria-hidden": "true",
      tabindex: "-1",
    }),
    field("Admin key (AUTH_KEY)", input, { hint: "Kept in this tab only (sessionStorage); cleared on log out." }),
    error,
    submit,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const key = input.value.trim();
    error.hidden = true;
    if (!key) {
      error.textContent = "Enter the admin key.";
      error.hidden = false;
      return;
    }
    submit.disabled = true;
    submit.textContent = "Checking…";
    try {
      await api("GET", "/api/groups", { key });
      auth.set(key);
      navigate("/dashboard");
    } catch (err) {
      error.textContent = err.status === 401 ? "That admin key is not valid." : err.message;
      error.hidden = false;
      input.select();
    } finally {
      submit.disabled = false;
      submit.textContent = "Log in";
    }
  });
  main.append(h("div", { class: "login-wrap" }, form));
  input.focus();
}
