# --- source: the repository root, minus what .gcloudignore keeps out of `gcloud run deploy --source` ---------
data "archive_file" "source" {
  type        = "zip"
  source_dir  = local.repo_root
  output_path = "${path.module}/.build/function-source.zip"
  excludes = [
    ".git/**", ".ci/**", ".benchmarks/**", ".hypothesis/**", ".pytest_cache/**", ".ruff_cache/**", ".venv/**",
    "bench/**", "data/**", "docs/**", "infra/**", "test-artifacts/**", "tests/**",
    "**/__pycache__/**", "**/*.pyc", "**/*.db", "**/*.db-wal", "**/*.db-shm",
    ".env", ".env.example", ".gcloudignore", ".gitignore", "README.md", "biome.json", "pyproject.toml",
    "requirements-dev.txt",
  ]
}

resource "google_storage_bucket" "source" {
  project                     = var.project
  name                        = "${var.project}-${var.name}-source"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true

  # No age-based lifecycle rule: it would delete the zip the function was built from, and every later plan would
  # re-create it. There is only ever one zip: a changed source is a new object and Terraform deletes the old one.

  depends_on = [google_project_service.apis]
}

# Named by content hash: a changed source is a new object, which redeploys the function; an unchanged one is not.
resource "google_storage_bucket_object" "source" {
  bucket = google_storage_bucket.source.name
  name   = "source/${data.archive_file.source.output_sha256}.zip"
  source = data.archive_file.source.output_path
}

# --- the service -------------------------------------------------------------------------------------------
# A Cloud Run *service* built from the source zip with the functions framework (build_config: Google's Python
# buildpack, entry point `handler`), not a Cloud Functions (gen2) function: the Live API needs WebSocket upgrades to
# reach the code, which Cloud Run services document (docs: "Using WebSockets" on Cloud Run) and Cloud Functions does
# not (README: "Deploy to Google Cloud"). Same code, same functions-framework server, same IAM, secrets, scheduler
# and concurrency as the function had.
locals {
  # Exactly the settings gptload/config.py reads that this deployment needs (tests/infra checks both ways).
  # Not set: PORT (Cloud Run sets it), HOST/DATA_DIR/MAINTENANCE_INTERVAL_SECONDS (embedded mode only),
  # REQUEST_*_TIMEOUT_SECONDS/GRACEFUL_TIMEOUT_SECONDS/TLS_* (python main.py's own server only), MAX_BODY_BYTES
  # (default; Cloud Run caps bodies at 32 MiB anyway). AUTH_KEY and ENCRYPTION_KEY come from Secret Manager (below).
  # TRUSTED_PROXY_HOPS = 1: Google's front end appends the client's address to X-Forwarded-For and sets
  # X-Forwarded-Proto; what a client wrote there itself is not believed.
  service_env = {
    STORE                 = "firestore"
    VAULT                 = "secretmanager"
    GOOGLE_CLOUD_PROJECT  = var.project
    FIRESTORE_DATABASE    = google_firestore_database.gptload.name
    SECRET_PREFIX         = local.secret_prefix
    THREADS               = var.concurrency
    LIVE_MAX_SESSIONS     = var.concurrency # Cloud Run bounds requests to THREADS: sessions may take them all
    STATE_REFRESH_SECONDS = var.state_refresh_seconds
    ALLOWED_ORIGINS       = join(",", local.allowed_origins)
    OIDC_AUDIENCE         = local.maintenance_audience
    OIDC_SERVICE_ACCOUNT  = google_service_account.scheduler.email
    LOG_LEVEL             = var.log_level
    TRUSTED_PROXY_HOPS    = "1"
  }
  base_image = "${var.region}-docker.pkg.dev/serverless-runtimes/google-22/runtimes/python312"
  image      = "${var.region}-docker.pkg.dev/${var.project}/${google_artifact_registry_repository.functions.repository_id}/${var.name}"
}

resource "google_cloud_run_v2_service" "gptload" {
  project             = var.project
  location            = var.region
  name                = var.name
  description         = "gptload: key-pool proxy for the Gemini API"
  ingress             = "INGRESS_TRAFFIC_ALL"
  deletion_protection = false

  build_config {
    source_location = "gs://${google_storage_bucket.source.name}/${google_storage_bucket_object.source.name}"
    function_target = "handler" # main.py: def handler(request), served by functions-framework
    base_image      = local.base_image
    # Our own repository, with a cleanup policy (below), instead of the shared cloud-run-source-deploy one.
    image_uri                = local.image
    enable_automatic_updates = true
    service_account          = google_service_account.build.id
  }

  template {
    service_account = google_service_account.runtime.email
    # One thread per concurrent request (gunicorn gthread via functions-framework): THREADS below must equal this.
    # A Live API session (WebSocket) holds one for its whole life.
    max_instance_request_concurrency = var.concurrency
    timeout                          = "${var.timeout_seconds}s" # also the longest Live session
    session_affinity                 = true                      # a reconnecting Live client tends to come back

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    containers {
      image          = local.image
      base_image_uri = local.base_image

      resources {
        limits = {
          cpu    = var.cpu
          memory = var.memory
        }
      }

      dynamic "env" {
        for_each = local.service_env
        content {
          name  = env.key
          value = env.value
        }
      }

      env {
        name = "AUTH_KEY"
        value_source {
          secret_key_ref {
            secret = google_secret_manager_secret.auth_key.secret_id
            # The version written by secrets.tf, not "latest": a rotation (auth_key_version) rolls out a new
            # revision instead of leaving running instances on the old password and new ones on the new.
            version = google_secret_manager_secret_version.auth_key.version
          }
        }
      }

      # Seals proxy_url credentials at rest (secrets.tf): generated once, never rotated.
      env {
        name = "ENCRYPTION_KEY"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.encryption_key.secret_id
            version = google_secret_manager_secret_version.encryption_key.version
          }
        }
      }
    }
  }

  traffic {
    type    = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
    percent = 100
  }

  lifecycle {
    # A deployment made when the prefix was NAME-vault keeps its keys in NAME-vault-* secrets: deploying the new
    # default over them would hide them from the service. Say so instead (README: "Key secrets of older
    # deployments").
    precondition {
      condition     = var.secret_prefix != "" || length(local.legacy_secrets) == 0
      error_message = "Key secrets of the old layout exist (${join(", ", local.legacy_secrets)}): set secret_prefix = \"${var.name}-vault\" to keep using them (README: \"Key secrets of older deployments\")."
    }
  }

  depends_on = [
    google_project_service.apis,
    time_sleep.build_grants, # the build account's grants have had time to take effect
    google_secret_manager_secret_version.auth_key,
    google_secret_manager_secret_iam_member.runtime_auth_key,
    google_secret_manager_secret_version.encryption_key,
    google_secret_manager_secret_iam_member.runtime_encryption_key,
  ]
}

# --- the function's images -------------------------------------------------------------------------------------
# Every deploy builds a new image. Keep the two newest (the serving one and the one before, for a rollback) and
# delete the rest after a week, so that storage stays inside Artifact Registry's free 0.5 GB.
resource "google_artifact_registry_repository" "functions" {
  project       = var.project
  location      = var.region
  repository_id = "${var.name}-functions"
  description   = "gptload service images (built by Cloud Build from the source zip)"
  format        = "DOCKER"

  cleanup_policy_dry_run = false
  cleanup_policies {
    id     = "keep-newest"
    action = "KEEP"
    most_recent_versions {
      keep_count = 2
    }
  }
  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      tag_state  = "ANY"
      older_than = "604800s" # 7 days
    }
  }

  depends_on = [google_project_service.apis]
}

# Public: SDKs call the proxy with a proxy key and the console/admin API sends AUTH_KEY; the function checks both
# itself (and the scheduler's OIDC token). Cloud Run must not demand a Google identity in front of that.
resource "google_cloud_run_service_iam_member" "public" {
  project  = var.project
  location = var.region
  service  = google_cloud_run_v2_service.gptload.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}
