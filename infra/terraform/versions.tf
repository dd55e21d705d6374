terraform {
  # 1.11: write-only arguments (secret_data_wo, secrets.tf), ephemeral resources and variables (1.10) and
  # validations that compare variables (1.9, variables.tf).
  required_version = ">= 1.11"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.50" # tests/infra checks these files against 6.50.0's schema
    }
    archive = {
      source  = "hashicorp/archive"
      version = "~> 2.4" # 2.4+: glob patterns in archive_file excludes
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.7" # 3.7+: ephemeral random_password
    }
    time = {
      source  = "hashicorp/time"
      version = "~> 0.13"
    }
  }
}

provider "google" {
  project = var.project
  region  = var.region
}
