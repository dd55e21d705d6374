variable "project" {
  description = "Google Cloud project ID to deploy into."
  type        = string
}

variable "region" {
  description = "Region of the function, the scheduler job and the buckets."
  type        = string
  default     = "us-central1"
}

variable "name" {
  description = "Name of the function; prefixes the service accounts, secrets, buckets and the scheduler job."
  type        = string
  default     = "gptload"

  validation {
    # service account ids are 6-30 characters and get a suffix of up to 6 ("-sched")
    condition     = can(regex("^[a-z][a-z0-9-]{1,18}[a-z0-9]$", var.name))
    error_message = "name: 3-20 characters, lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "min_instances" {
  description = "Instances kept warm (0 = scale to zero; 1 removes cold starts for about the price of one idle instance)."
  type        = number
  default     = 0
}

variable "max_instances" {
  description = "Upper bound of instances (and of spend)."
  type        = number
  default     = 10
}

variable "concurrency" {
  description = "Concurrent requests per instance. THREADS (the server's thread pool) is set to the same value: a streamed answer holds one thread for its whole duration."
  type        = number
  default     = 1000

  validation {
    condition     = var.concurrency >= 1 && var.concurrency <= 1000
    error_message = "concurrency: 1..1000 (Cloud Run's limit, and the range THREADS accepts)."
  }
}

variable "cpu" {
  description = "vCPUs per instance; concurrency above 1 needs at least 1."
  type        = string
  default     = "1"

  validation {
    condition     = can(regex("^[0-9]*\\.?[0-9]+$", var.cpu))
    error_message = "cpu: a number of vCPUs (e.g. \"1\", \"2\", \"0.5\")."
  }
  validation {
    # Cloud Run runs one request at a time on less than one vCPU (the same check as infra/deploy.sh).
    condition     = try(tonumber(var.cpu), 1) >= 1 || var.concurrency == 1
    error_message = "cpu below 1 needs concurrency = 1 (Cloud Run runs one request at a time there)."
  }
}

variable "memory" {
  description = "Memory per instance."
  type        = string
  default     = "1Gi"
}

variable "timeout_seconds" {
  description = "Longest request, in seconds. Long streamed answers (thinking models) run for minutes; 3600 is the gen2 maximum."
  type        = number
  default     = 3600

  validation {
    condition     = var.timeout_seconds >= 60 && var.timeout_seconds <= 3600
    error_message = "timeout_seconds: 60..3600."
  }
}

variable "state_refresh_seconds" {
  description = "How stale an instance's cached view of groups and keys may get (STATE_REFRESH_SECONDS)."
  type        = number
  default     = 5
}

variable "log_level" {
  description = "LOG_LEVEL of the function."
  type        = string
  default     = "INFO"
}

variable "firestore_database" {
  description = "Firestore database ID. \"(default)\" gets the free tier; pick another ID if the project's default database is in Datastore mode or used by something else."
  type        = string
  default     = "(default)"
}

variable "firestore_location" {
  description = "Firestore location: a region (e.g. us-central1, cheaper) or a multi-region (nam5, eur3). Empty: the function's region."
  type        = string
  default     = ""
}

variable "schedule" {
  description = "Cron schedule of the maintenance job (usage flush, key re-validation, log retention)."
  type        = string
  default     = "*/5 * * * *"
}

variable "console_bucket" {
  description = "Also serve the admin console (admin_ui/) from a public Cloud Storage bucket. The function serves it at / anyway."
  type        = bool
  default     = false
}

variable "allowed_origins" {
  description = "Extra browser origins allowed to call the admin API (CORS), e.g. a console on your own domain."
  type        = list(string)
  default     = []
}

variable "auth_key" {
  description = "Admin password (AUTH_KEY, 8+ characters). Empty: a random one is generated. Either way it is stored in Secret Manager only, never in the Terraform state or plan (ephemeral, written through secret_data_wo)."
  type        = string
  default     = ""
  sensitive   = true
  ephemeral   = true

  validation {
    condition     = var.auth_key == "" || length(var.auth_key) >= 8
    error_message = "auth_key must be at least 8 characters (or empty to generate one)."
  }
}

variable "auth_key_version" {
  description = "Raise it to write AUTH_KEY again (a new random one, or the given auth_key): the write-only secret is sent only when this changes."
  type        = number
  default     = 1
}

variable "secret_prefix" {
  description = "Prefix of the key vault's secrets. Empty: NAME_vault. Set it to \"NAME-vault\" only to keep the key secrets of a deployment made before that (README: \"Key secrets of older deployments\")."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]*$", var.secret_prefix))
    error_message = "secret_prefix: letters, digits, - and _."
  }
}

variable "billing_account" {
  description = "Billing account ID (XXXXXX-XXXXXX-XXXXXX) for the optional budget; needed when budget_amount > 0."
  type        = string
  default     = ""
}

variable "budget_amount" {
  description = "Monthly budget for this project in the billing account's currency; 0 = no budget. Alerts at 50, 90 and 100 %."
  type        = number
  default     = 0

  validation {
    condition     = var.budget_amount >= 0 && (var.budget_amount == 0 || var.billing_account != "")
    error_message = "budget_amount > 0 needs billing_account."
  }
}

variable "alert_emails" {
  description = "E-mail addresses told about budget thresholds and failed maintenance runs."
  type        = list(string)
  default     = []
}
