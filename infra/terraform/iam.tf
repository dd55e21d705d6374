# Three identities, each with only what it uses. No primitive role (owner/editor/viewer) anywhere; the
# function does NOT run as the Compute Engine default service account (Editor on the project).

resource "google_service_account" "runtime" {
  project      = var.project
  account_id   = "${var.name}-run"
  display_name = "gptload function runtime"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "scheduler" {
  project      = var.project
  account_id   = "${var.name}-sched"
  display_name = "gptload maintenance scheduler (OIDC caller)"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "build" {
  project      = var.project
  account_id   = "${var.name}-build"
  display_name = "gptload function build (Cloud Build)"
  depends_on   = [google_project_service.apis]
}

# --- runtime: Firestore ------------------------------------------------------------------------------------
# Read/write documents, in gptload's database only.
resource "google_project_iam_member" "runtime_firestore" {
  project = var.project
  role    = "roles/datastore.user"
  member  = google_service_account.runtime.member

  condition {
    title      = "${var.name} database only"
    expression = "resource.name == \"projects/${var.project}/databases/${google_firestore_database.gptload.name}\""
  }
}

# --- runtime: Secret Manager -------------------------------------------------------------------------------
# The admin API writes keys: on import/delete the function creates a group's shard secrets, adds versions,
# destroys superseded versions, reads them, and deletes a group's secrets with the group
# (gptload/vault/secret_manager_vault.py). Why a custom role and not roles/secretmanager.admin with a
# condition: admin also carries setIamPolicy/update, i.e. the function could grant others access to the keys.
# This role has exactly the five calls the vault makes, and the condition limits it to secrets whose name
# starts with "{SECRET_PREFIX}-" (versions' names start with their secret's name, so they match too).
resource "google_project_iam_custom_role" "vault" {
  project     = var.project
  role_id     = "${replace(var.name, "-", "_")}_vault"
  title       = "gptload key vault (${var.name})"
  description = "Read and rotate the versions of gptload's own key secrets; delete them with their group."
  permissions = [
    "secretmanager.secrets.delete",
    "secretmanager.versions.access",
    "secretmanager.versions.add",
    "secretmanager.versions.destroy",
  ]
  depends_on = [google_project_service.apis] # iam.googleapis.com, on a fresh project
}

resource "google_project_iam_member" "runtime_vault" {
  project = var.project
  role    = google_project_iam_custom_role.vault.id
  member  = google_service_account.runtime.member

  condition {
    title      = "${var.name} vault secrets only"
    expression = "resource.name.startsWith(\"${local.vault_secrets}\")"
  }
}

# secrets.create is authorized on the parent project, so it sits in its own role. The condition restricts it
# to the vault's names where IAM evaluates the new secret's name, and still lets it through where IAM
# evaluates the project (a condition that only named secrets would then deny every create). Creating a secret
# grants nothing on it: reading or writing versions needs the conditional role above.
resource "google_project_iam_custom_role" "secret_creator" {
  project     = var.project
  role_id     = "${replace(var.name, "-", "_")}_secret_creator"
  title       = "gptload shard creator (${var.name})"
  description = "Create gptload's per-group key secrets."
  permissions = ["secretmanager.secrets.create"]
  depends_on  = [google_project_service.apis]
}

resource "google_project_iam_member" "runtime_secret_creator" {
  project = var.project
  role    = google_project_iam_custom_role.secret_creator.id
  member  = google_service_account.runtime.member

  condition {
    title      = "${var.name} vault secrets only"
    expression = "resource.type != \"secretmanager.googleapis.com/Secret\" || resource.name.startsWith(\"${local.vault_secrets}\")"
  }
}

# AUTH_KEY: read-only, on that one secret (Cloud Run resolves secret environment variables as the runtime SA).
resource "google_secret_manager_secret_iam_member" "runtime_auth_key" {
  project   = var.project
  secret_id = google_secret_manager_secret.auth_key.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime.member
}

# ENCRYPTION_KEY: read-only, on that one secret (the service never writes it: a deploy creates it once).
resource "google_secret_manager_secret_iam_member" "runtime_encryption_key" {
  project   = var.project
  secret_id = google_secret_manager_secret.encryption_key.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime.member
}

# --- scheduler: may invoke this function, nothing else -----------------------------------------------------
resource "google_cloud_run_service_iam_member" "scheduler_invoker" {
  project  = var.project
  location = var.region
  service  = google_cloud_run_v2_service.gptload.name
  role     = "roles/run.invoker"
  member   = google_service_account.scheduler.member
}

# --- build: what Cloud Build needs to turn the source zip into the function's image ------------------------
# (read the source, push to Artifact Registry, write build logs). Without a build service account of our own,
# new projects build as the Compute Engine default account, which may lack these or have far more.
resource "google_project_iam_member" "build" {
  for_each = toset([
    "roles/artifactregistry.writer",
    "roles/logging.logWriter",
    "roles/storage.objectViewer",
  ])

  project = var.project
  role    = each.value
  member  = google_service_account.build.member
}

# IAM is eventually consistent: a grant takes effect within about a minute (often sooner), and the first build
# of a fresh deployment starts right after these are created. Terraform has no "grant is effective" signal, so
# the function waits this long after the build account's grants are first created (not on later applies: the
# sleep is only re-created when the set of grants changes).
resource "time_sleep" "build_grants" {
  create_duration = "90s"
  triggers = {
    grants = join(",", sort([for m in google_project_iam_member.build : m.role]))
  }
  depends_on = [google_project_iam_member.build]
}
