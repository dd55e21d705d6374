# --- source: the repository root, minus what .gcloudignore keeps out of `gcloud functions deploy` ----------
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

  lifecycle_rule {
    condition {
      age = 30 # old source zips; the function keeps its built image
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.apis]
}

# Named by content hash: a changed source is a new object, which redeploys the function; an unchanged one is not.
resource "google_storage_bucket_object" "source" {
  bucket = google_storage_bucket.source.name
  name   = "source/${data.archive_file.source.output_sha256}.zip"
  source = data.archive_file.source.output_path
}

# --- the function ------------------------------------------------------------------------------------------
resource "google_cloudfunctions2_function" "gptload" {
  project     = var.project
  location    = var.region
  name        = var.name
  description = "gptload: key-pool proxy for the Gemini API"

  build_config {
    runtime         = "python312"
    entry_point     = "handler" # main.py: def handler(request)
    service_account = google_service_account.build.id

    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    min_instance_count = var.min_instances
    max_instance_count = var.max_instances
    # One thread per concurrent request (gunicorn gthread via functions-framework): THREADS below must equal this.
    max_instance_request_concurrency = var.concurrency
    available_cpu                    = var.cpu
    available_memory                 = var.memory
    timeout_seconds                  = var.timeout_seconds
    service_account_email            = google_service_account.runtime.email
    ingress_settings                 = "ALLOW_ALL"
    all_traffic_on_latest_revision   = true

    # Exactly the settings gptload/config.py reads that this deployment needs (tests/infra checks both ways).
    # Not set: PORT (Cloud Run sets it), HOST/DATA_DIR/MAINTENANCE_INTERVAL_SECONDS (embedded mode only),
    # REQUEST_*_TIMEOUT_SECONDS/GRACEFUL_TIMEOUT_SECONDS (python main.py's own server only), ENCRYPTION_KEY (only
    # for VAULT=store), MAX_BODY_BYTES (default; Cloud Run caps bodies at 32 MiB anyway).
    # TRUSTED_PROXY_HOPS = 1: Google's front end appends the client's address to X-Forwarded-For and sets
    # X-Forwarded-Proto; what a client wrote there itself is not believed.
    environment_variables = {
      STORE                 = "firestore"
      VAULT                 = "secretmanager"
      GOOGLE_CLOUD_PROJECT  = var.project
      FIRESTORE_DATABASE    = google_firestore_database.gptload.name
      SECRET_PREFIX         = local.secret_prefix
      THREADS               = var.concurrency
      STATE_REFRESH_SECONDS = var.state_refresh_seconds
      ALLOWED_ORIGINS       = join(",", local.allowed_origins)
      OIDC_AUDIENCE         = local.maintenance_audience
      OIDC_SERVICE_ACCOUNT  = google_service_account.scheduler.email
      LOG_LEVEL             = var.log_level
      TRUSTED_PROXY_HOPS    = "1"
    }

    secret_environment_variables {
      key        = "AUTH_KEY"
      project_id = var.project
      secret     = google_secret_manager_secret.auth_key.secret_id
      version    = "latest"
    }
  }

  depends_on = [
    google_project_service.apis,
    google_project_iam_member.build,
    google_secret_manager_secret_version.auth_key,
    google_secret_manager_secret_iam_member.runtime_auth_key,
  ]
}

# Public: SDKs call the proxy with a proxy key and the console/admin API sends AUTH_KEY; the function checks both
# itself (and the scheduler's OIDC token). Cloud Run must not demand a Google identity in front of that.
resource "google_cloud_run_service_iam_member" "public" {
  project  = var.project
  location = var.region
  service  = google_cloudfunctions2_function.gptload.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}
