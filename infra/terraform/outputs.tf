output "function_url" {
  description = "Base URL of gptload (proxy at /proxy/GROUP, admin API at /api, console at /)."
  value       = google_cloud_run_v2_service.gptload.uri
}

output "console_url" {
  description = "The admin console: the bucket's copy when console_bucket = true, else the function's own."
  value       = var.console_bucket ? local.console_url : "${google_cloud_run_v2_service.gptload.uri}/"
}

output "auth_key_secret" {
  description = "Secret Manager secret holding AUTH_KEY (the admin password)."
  value       = google_secret_manager_secret.auth_key.secret_id
}

output "encryption_key_secret" {
  description = "Secret Manager secret holding ENCRYPTION_KEY (seals proxy_url credentials; never change it)."
  value       = google_secret_manager_secret.encryption_key.secret_id
}

output "maintenance_audience" {
  description = "OIDC audience of the maintenance job's token (= the function's OIDC_AUDIENCE)."
  value       = local.maintenance_audience
}

output "next_steps" {
  description = "What to do now."
  value       = <<-EOT
    1. Admin password:  gcloud secrets versions access latest --secret=${google_secret_manager_secret.auth_key.secret_id} --project=${var.project}
    2. Console:         ${var.console_bucket ? local.console_url : "${google_cloud_run_v2_service.gptload.uri}/"}
       or the API:      curl -s ${google_cloud_run_v2_service.gptload.uri}/api/groups -H "Authorization: Bearer $AUTH" -d '{"name": "main", "proxy_keys": ["my-proxy-key-123"]}'
                        curl -s ${google_cloud_run_v2_service.gptload.uri}/api/groups/main/keys -H "Authorization: Bearer $AUTH" -d '{"keys": "AIza...first"}'
    3. SDK base URL:    ${google_cloud_run_v2_service.gptload.uri}/proxy/main   (api_key = a proxy key of the group)
    4. Composite indexes build for a few minutes after the first apply; the request-log filters need them.
  EOT
}
