# gptload on Google Cloud: one Cloud Run function (gen2) + Firestore (state) + Secret Manager (keys) + Cloud
# Scheduler (maintenance). Files: iam.tf (who may do what), firestore.tf and firestore_schema.tf (generated),
# secrets.tf, function.tf, scheduler.tf, console.tf (optional bucket), outputs.tf.

data "google_project" "this" {
  project_id = var.project

  # Cloud Resource Manager must be on before the project can be read (a fresh project).
  depends_on = [google_project_service.apis]
}

# Every secret of the project, to find key secrets of the layout before NAME_vault (see the function's
# precondition in function.tf).
data "google_secret_manager_secrets" "all" {
  project    = var.project
  depends_on = [google_project_service.apis]
}

locals {
  repo_root = abspath("${path.module}/../..")

  # Real keys live in secrets named {SECRET_PREFIX}-{group}-keys-{n}, created by the function at runtime. The
  # runtime's conditional grant (iam.tf) covers names starting with "{SECRET_PREFIX}-". "_" cannot occur in a
  # name (variables.tf), so "NAME_vault-" starts this deployment's key secrets and nothing else: not its AUTH_KEY
  # and ENCRYPTION_KEY secrets (NAME-auth-key, NAME-encryption-key, read-only for the function), and no secret of
  # another deployment in the project, whatever its name ("NAME-vault-..." would also have matched a deployment
  # named "NAME-vault").
  secret_prefix         = coalesce(var.secret_prefix, "${var.name}_vault")
  auth_key_secret       = "${var.name}-auth-key"
  encryption_key_secret = "${var.name}-encryption-key"

  # Key secrets of the layout before NAME_vault (NAME-vault-GROUP-keys-N); the function refuses to deploy over
  # them (function.tf). Without "_": not the NAME_vault-... shards of a deployment named NAME-vault-SOMETHING.
  legacy_secrets = [for s in data.google_secret_manager_secrets.all.secrets : s.secret_id if can(regex("^${var.name}-vault-[^_]+-keys-[0-9]+$", s.secret_id))]

  # IAM conditions compare resource names, and Secret Manager names secrets by project *number*.
  vault_secrets = "projects/${data.google_project.this.number}/secrets/${local.secret_prefix}-"

  firestore_location = var.firestore_location != "" ? var.firestore_location : var.region

  # OIDC audience of the scheduler's token: an opaque string both sides know in advance (the URL the deployment
  # had as a Cloud Functions function, kept so that upgraded deployments keep working), so the service's own
  # environment can carry it without a dependency cycle (the run.app URL is only known after the service
  # exists). The scheduler sends exactly this string as the token's audience (scheduler.tf) and the service
  # compares it exactly (OIDC_AUDIENCE); the job itself calls the run.app URL, which Cloud Run serves without
  # checking audiences because the service is public and does its own authentication.
  maintenance_audience = "https://${var.region}-${var.project}.cloudfunctions.net/${var.name}/api/tasks/run"

  # The console bucket's pages are served from https://storage.googleapis.com/BUCKET/...: that is their origin.
  console_origin  = "https://storage.googleapis.com"
  allowed_origins = distinct(concat(var.allowed_origins, var.console_bucket ? [local.console_origin] : []))

  apis = [
    "artifactregistry.googleapis.com",     # the function's container image
    "cloudbuild.googleapis.com",           # builds the service from source
    "cloudresourcemanager.googleapis.com", # project IAM bindings
    "cloudscheduler.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com", # the alert on maintenance failures and the e-mail channels (monitoring.tf)
    "run.googleapis.com",        # the service
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ]
  budget_apis = var.budget_amount > 0 ? ["billingbudgets.googleapis.com"] : []
}

resource "google_project_service" "apis" {
  for_each = toset(concat(local.apis, local.budget_apis))

  project            = var.project
  service            = each.value
  disable_on_destroy = false # other things in the project may use them
}
