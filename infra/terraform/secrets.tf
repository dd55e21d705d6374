# AUTH_KEY, the admin password, reaches the function as a secret environment variable, never as plain env.
# The key vault's own secrets ({SECRET_PREFIX}-{group}-keys-{n}) are created by the function, not here.
resource "random_password" "auth_key" {
  length  = 32
  special = false
}

resource "google_secret_manager_secret" "auth_key" {
  project   = var.project
  secret_id = local.auth_key_secret

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "auth_key" {
  secret      = google_secret_manager_secret.auth_key.id
  secret_data = var.auth_key != "" ? var.auth_key : random_password.auth_key.result
}
