# The state store (STORE=firestore). Indexes and TTL policies: firestore_schema.tf, generated from the store's
# FIRESTORE_INDEXES and FIRESTORE_TTL_FIELDS.
resource "google_firestore_database" "gptload" {
  project     = var.project
  name        = var.firestore_database
  location_id = local.firestore_location
  type        = "FIRESTORE_NATIVE"

  # Groups, key states and statistics live here: no accidental deletion. `terraform destroy` leaves the
  # database in place (ABANDON); README "Tear it down" shows how to delete it on purpose.
  delete_protection_state = "DELETE_PROTECTION_ENABLED"
  deletion_policy         = "ABANDON"

  depends_on = [google_project_service.apis]
}
