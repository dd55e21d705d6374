// What the keys page asks of the API besides listing: restore, disable / enable, validate, export and delete a
// selection; restore all and clear the invalid keys (each after a confirmation that gives the count). Each reloads.
import { api, downloadPost } from "../../api.js";
import { confirmDialog, fmtInt, toast } from "../../dom.js";
import { followTask } from "./dialogs.js";

const plural = (n, word) => `${fmtInt(n)} ${word}${n === 1 ? "" : "s"}`;

function done(page, message) {
  toast(message);
  page.state.selected.clear();
  page.load();
}

/** Restore the given keys to active, or, after a confirmation with the count, every invalid or cooling key of the
 * group (ids null). Disabled keys stay disabled either way. */
export async function restoreKeys(page, ids) {
  if (!ids) {
    const counts = page.state.counts || {};
    const n = (counts.invalid || 0) + (counts.cooling || 0);
    if (!n) return toast("No invalid or cooling key to restore");
    const question = `Restore all ${plural(n, "key")}?`;
    const text = `Every invalid or cooling key of ${page.name} (${fmtInt(counts.invalid || 0)} invalid, ${fmtInt(counts.cooling || 0)} cooling) becomes active again and is retried by the next requests. Disabled keys stay disabled.`;
    if (!(await confirmDialog(question, text, `Restore ${fmtInt(n)}`))) return;
  }
  try {
    const r = await api("POST", page.path + "/restore", { body: ids ? { ids } : {} });
    done(page, `Restored ${plural(r.restored, "key")}`);
  } catch (err) {
    toast(err.message, "error");
  }
}

/** Disable (or enable) keys: a disabled key is never used and nothing but an admin brings it back. */
export async function setDisabled(page, ids, disable) {
  if (!ids.length) return;
  try {
    const r = await api("POST", `${page.path}/${disable ? "disable" : "enable"}`, { body: { ids } });
    const n = disable ? r.disabled : r.enabled;
    done(page, `${disable ? "Disabled" : "Enabled"} ${plural(n, "key")}`);
  } catch (err) {
    toast(err.message, "error");
  }
}

/** One key's Disable / Enable button. */
export async function setKeyStatus(page, k, status) {
  try {
    await api("PUT", `${page.path}/${encodeURIComponent(k.id)}`, { body: { status } });
    toast(`${status === "disabled" ? "Disabled" : "Enabled"} ${k.key}`);
    page.load();
  } catch (err) {
    toast(err.message, "error");
  }
}

/** Validate the selected keys at once (a selection is no action on all keys: no confirmation). */
export async function validateSelected(page, ids) {
  if (!ids.length) return;
  try {
    const { task } = await api("POST", page.path + "/validate", { body: { scope: "selected", ids } });
    page.state.selected.clear();
    await followTask(page, task);
  } catch (err) {
    toast(err.message, "error");
  }
}

export async function exportSelected(page, ids) {
  if (!ids.length) return;
  try {
    await downloadPost(page.path + "/export", `${page.name}-keys-selected.txt`, { ids });
    toast(`Exported ${plural(ids.length, "key")}`);
  } catch (err) {
    toast(err.message, "error");
  }
}

/** Delete keys after a confirmation; label names a single key in the question. */
export async function deleteKeys(page, ids, label) {
  if (!ids.length) return;
  const what = label ? `key ${label}` : `${plural(ids.length, "selected key")}`;
  if (
    !(await confirmDialog(
      `Delete ${what}?`,
      "Deleted keys and their stored secrets are gone for good; import them again to bring them back.",
    ))
  )
    return;
  try {
    const r = await api("DELETE", page.path, { body: { ids } });
    toast(`Deleted ${plural(r.deleted, "key")}`);
    for (const id of ids) page.state.selected.delete(id);
    page.load();
  } catch (err) {
    toast(err.message, "error");
  }
}

export async function clearInvalid(page) {
  const n = page.state.counts?.invalid || 0;
  if (!n) return toast("No invalid key to delete");
  if (
    !(await confirmDialog(
      `Delete all ${plural(n, "invalid key")}?`,
      `Every key marked invalid in ${page.name} is deleted with its stored secret. Disabled keys are kept.`,
      `Delete ${fmtInt(n)}`,
    ))
  )
    return;
  try {
    const r = await api("POST", page.path + "/clear-invalid", { body: {} });
    toast(`Deleted ${plural(r.deleted, "invalid key")}`);
    page.load();
  } catch (err) {
    toast(err.missingRoute ? "Clearing invalid keys is not available on this server yet." : err.message, "error");
  }
}
