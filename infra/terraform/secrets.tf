# AUTH_KEY, the admin password, reaches the function as a secret environment variable, never as plain env.
# The key vault's own secrets ({SECRET_PREFIX}-{group}-keys-{n}) are created by the function, not here.
#
# It never lands in the Terraform state or plan: the generated value is ephemeral (regenerated on every run and
# never stored) and reaches Secret Manager through the write-only secret_data_wo, which Terraform sends only when
# secret_data_wo_version changes. var.auth_key is an ephemeral variable for the same reason. To rotate the
# password, raise auth_key_version (with or without a new auth_key).
ephemeral "random_password" "auth_key" {
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
  secret                 = google_secret_manager_secret.auth_key.id
  secret_data_wo         = var.auth_key != "" ? var.auth_key : ephemeral.random_password.auth_key.result
  secret_data_wo_version = var.auth_key_version
}
