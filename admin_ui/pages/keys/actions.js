// What the keys page asks of the API besides listing: restore, delete, clear the invalid keys. Each reloads the page.
import { api } from "../../api.js";
import { confirmDialog, toast } from "../../dom.js";

/** Restore the given keys to active, or every key of the group when ids is null. */
export async function restoreKeys(page, ids) {
  try {
    const r = await api("POST", page.path + "/restore", { body: ids ? { ids } : {} });
    toast(`Restored ${r.restored} key${r.restored === 1 ? "" : "s"}`);
    page.state.selected.clear();
    page.load();
  } catch (err) {
    toast(err.message, "error");
  }
}

/** Delete keys after a confirmation; label names a single key in the question. */
export async function deleteKeys(page, ids, label) {
  if (!ids.length) return;
  const what = label ? `key ${label}` : `${ids.length} selected key${ids.length === 1 ? "" : "s"}`;
  if (
    !(await confirmDialog(
      `Delete ${what}?`,
      "Deleted keys and their stored secrets are gone for good; import them again to bring them back.",
    ))
  )
    return;
  try {
    const r = await api("DELETE", page.path, { body: { ids } });
    toast(`Deleted ${r.deleted} key${r.deleted === 1 ? "" : "s"}`);
    for (const id of ids) page.state.selected.delete(id);
    page.load();
  } catch (err) {
    toast(err.message, "error");
  }
}

export async function clearInvalid(page) {
  if (
    !(await confirmDialog(
      "Delete all invalid keys?",
      "Every key marked invalid in this group is deleted with its stored secret.",
    ))
  )
    return;
  try {
    const r = await api("POST", page.path + "/clear-invalid", { body: {} });
    toast(`Deleted ${r.deleted} invalid key${r.deleted === 1 ? "" : "s"}`);
    page.load();
  } catch (err) {
    toast(err.missingRoute ? "Clearing invalid keys is not available on this server yet." : err.message, "error");
  }
}
