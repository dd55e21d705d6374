# Maintenance (POST /api/tasks/run): usage flush, re-validation of invalid and cooled-down keys, log retention.
# Authenticated with a Google-signed OIDC token of the scheduler service account; the function checks its
# signature, its audience (OIDC_AUDIENCE) and its e-mail (OIDC_SERVICE_ACCOUNT).
resource "google_cloud_scheduler_job" "maintenance" {
  project          = var.project
  region           = var.region
  name             = "${var.name}-maintenance"
  description      = "gptload maintenance round"
  schedule         = var.schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "600s"

  retry_config {
    retry_count = 0 # the next round comes soon enough
  }

  http_target {
    http_method = "POST"
    uri         = "${google_cloud_run_v2_service.gptload.uri}/api/tasks/run"

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = local.maintenance_audience # == the function's OIDC_AUDIENCE, see main.tf
    }
  }

  depends_on = [google_cloud_run_service_iam_member.scheduler_invoker]
}
