# Cost and failure alerts, sent to var.alert_emails (e-mail notification channels).

resource "google_monitoring_notification_channel" "email" {
  for_each = toset(var.alert_emails)

  project      = var.project
  display_name = "gptload (${var.name}): ${each.value}"
  type         = "email"
  labels = {
    email_address = each.value
  }

  depends_on = [google_project_service.apis]
}

# Optional (budget_amount > 0): a monthly budget on this project's costs. A budget alerts, it does not cap spend;
# max_instances is the cap. Billing account users and the e-mail channels hear at 50, 90 and 100 % (and at
# 100 % of the forecast). The Billing Budget API needs a quota project: see README "Budget and alerts".
resource "google_billing_budget" "gptload" {
  count = var.budget_amount > 0 ? 1 : 0

  billing_account = var.billing_account
  display_name    = "gptload (${var.name}) in ${var.project}"

  budget_filter {
    projects = ["projects/${data.google_project.this.number}"]
  }

  amount {
    specified_amount {
      units = tostring(var.budget_amount)
    }
  }

  dynamic "threshold_rules" {
    for_each = [0.5, 0.9, 1.0]
    content {
      threshold_percent = threshold_rules.value
    }
  }
  threshold_rules {
    threshold_percent = 1.0
    spend_basis       = "FORECASTED_SPEND"
  }

  all_updates_rule {
    monitoring_notification_channels = [for c in google_monitoring_notification_channel.email : c.id]
    disable_default_iam_recipients   = false
  }

  depends_on = [google_project_service.apis]
}

# A maintenance round that fails (the function answered an error, timed out or could not be reached) is logged by
# Cloud Scheduler at severity ERROR on the job. One incident per hour at most; it closes itself after a week.
resource "google_monitoring_alert_policy" "maintenance_failures" {
  project      = var.project
  display_name = "gptload (${var.name}): maintenance run failed"
  combiner     = "OR"

  conditions {
    display_name = "${google_cloud_scheduler_job.maintenance.name} logged an error"
    condition_matched_log {
      filter = "resource.type=\"cloud_scheduler_job\" AND resource.labels.job_id=\"${google_cloud_scheduler_job.maintenance.name}\" AND severity>=ERROR"
    }
  }

  alert_strategy {
    notification_rate_limit {
      period = "3600s"
    }
    auto_close = "604800s"
  }

  notification_channels = [for c in google_monitoring_notification_channel.email : c.id]

  documentation {
    mime_type = "text/markdown"
    content   = "The maintenance job of gptload (${var.name}) failed: usage flush, key re-validation and log retention did not run. See the job's logs (Cloud Scheduler) and the function's logs around that time; the next run is at most `${var.schedule}` away."
  }

  depends_on = [google_project_service.apis]
}
