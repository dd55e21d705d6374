#!/usr/bin/env bash
# Deploy gptload to Google Cloud with gcloud only (the same result as infra/terraform, for those without
# Terraform): APIs, service accounts and IAM (no primitive roles), Firestore (database, composite indexes, index
# exemptions, TTL policies), the AUTH_KEY and ENCRYPTION_KEY secrets, the Cloud Run function (gen2), the
# maintenance scheduler job and, with --console-bucket, the console in a public bucket.
#
#   bash infra/deploy.sh --project my-project [--region us-central1] [--name gptload] [--dry-run]
#
# Idempotent: every resource is described before it is created, and re-running updates what can change.
# --dry-run prints every command and runs none (not even gcloud's describes; a dry run assumes nothing exists).
# Any failed step stops the script with its error (nothing is skipped silently; "Done" means done). Bindings
# are retried with backoff: IAM takes a while to know a service account created a moment ago. The delays, in
# seconds, come from DEPLOY_RETRY_DELAYS (default "5 10 20 40").
# Terraform-only: the optional billing budget and the e-mail alert on maintenance failures (infra/terraform).
# Needs: gcloud (authenticated, with Owner or equivalent on the project), python3 (3.11+).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PROJECT=""
REGION="us-central1"
NAME="gptload"
DATABASE="(default)"
FIRESTORE_LOCATION=""
MIN_INSTANCES=0
MAX_INSTANCES=10
CONCURRENCY=1000
CPU=1
MEMORY="1Gi"
TIMEOUT=3600
STATE_REFRESH_SECONDS=5
LOG_LEVEL="INFO"
SCHEDULE="*/5 * * * *"
ALLOWED_ORIGINS=""
SECRET_PREFIX=""
CONSOLE_BUCKET=false
DRY_RUN=false

usage() {
  cat <<'EOF'
Usage: bash infra/deploy.sh --project PROJECT [options]

  --project ID             Google Cloud project (default: gcloud's configured project; required with --dry-run)
  --region REGION          function, scheduler and bucket region (default us-central1)
  --name NAME              function name and prefix of everything else (default gptload; 3-20 chars)
  --database ID            Firestore database (default "(default)")
  --firestore-location L   Firestore location, a region or nam5/eur3 (default: --region)
  --min-instances N        (default 0)        --max-instances N   (default 10)
  --concurrency N          requests per instance = THREADS (default 1000)
  --cpu N                  (default 1)        --memory SIZE       (default 1Gi)
  --timeout SECONDS        longest request, for long streams (default 3600, the maximum)
  --schedule CRON          maintenance schedule (default "*/5 * * * *")
  --allowed-origins LIST   comma-separated browser origins allowed to call the admin API
  --console-bucket         also serve admin_ui/ from a public bucket (adds its origin to ALLOWED_ORIGINS)
  --secret-prefix PREFIX   prefix of the key vault's secrets (default NAME_vault; "NAME-vault" only to keep
                           the key secrets of a deployment made before the prefix changed, see README)
  --dry-run                print the commands, run nothing
  -h, --help
EOF
}

need_value() { [ $# -ge 2 ] && [ -n "$2" ] || { echo "deploy.sh: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --project) need_value "$@"; PROJECT="$2"; shift 2 ;;
    --region) need_value "$@"; REGION="$2"; shift 2 ;;
    --name) need_value "$@"; NAME="$2"; shift 2 ;;
    --database) need_value "$@"; DATABASE="$2"; shift 2 ;;
    --firestore-location) need_value "$@"; FIRESTORE_LOCATION="$2"; shift 2 ;;
    --min-instances) need_value "$@"; MIN_INSTANCES="$2"; shift 2 ;;
    --max-instances) need_value "$@"; MAX_INSTANCES="$2"; shift 2 ;;
    --concurrency) need_value "$@"; CONCURRENCY="$2"; shift 2 ;;
    --cpu) need_value "$@"; CPU="$2"; shift 2 ;;
    --memory) need_value "$@"; MEMORY="$2"; shift 2 ;;
    --timeout) need_value "$@"; TIMEOUT="$2"; shift 2 ;;
    --schedule) need_value "$@"; SCHEDULE="$2"; shift 2 ;;
    --allowed-origins) need_value "$@"; ALLOWED_ORIGINS="$2"; shift 2 ;;
    --secret-prefix) need_value "$@"; SECRET_PREFIX="$2"; shift 2 ;;
    --console-bucket) CONSOLE_BUCKET=true; shift ;;
    --dry-run) DRY_RUN=true; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "deploy.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

if [ -z "$PROJECT" ]; then
  if $DRY_RUN; then echo "deploy.sh: --dry-run needs --project" >&2; exit 2; fi
  PROJECT="$(gcloud config get-value project 2>/dev/null || true)"
  [ -n "$PROJECT" ] || { echo "deploy.sh: no --project and no gcloud default project" >&2; exit 2; }
fi
[[ "$NAME" =~ ^[a-z][a-z0-9-]{1,18}[a-z0-9]$ ]] || { echo "deploy.sh: --name: 3-20 chars of a-z 0-9 -" >&2; exit 2; }
[[ "$CONCURRENCY" =~ ^[0-9]+$ ]] && [ "$CONCURRENCY" -ge 1 ] && [ "$CONCURRENCY" -le 1000 ] \
  || { echo "deploy.sh: --concurrency must be 1..1000" >&2; exit 2; }
[[ -z "$SECRET_PREFIX" || "$SECRET_PREFIX" =~ ^[A-Za-z0-9_-]+$ ]] \
  || { echo "deploy.sh: --secret-prefix: letters, digits, - and _" >&2; exit 2; }
[[ "$CPU" =~ ^[0-9]*\.?[0-9]+$ ]] || { echo "deploy.sh: --cpu: a number of vCPUs (e.g. 1, 2, 0.5)" >&2; exit 2; }
# Cloud Run serves one request at a time on less than one vCPU (the same check as variables.tf).
if [[ "$CPU" =~ ^0*(\.[0-9]+)?$ ]] && [ "$CONCURRENCY" -gt 1 ]; then
  echo "deploy.sh: --cpu below 1 needs --concurrency 1 (Cloud Run runs one request at a time there)" >&2; exit 2
fi
FIRESTORE_LOCATION="${FIRESTORE_LOCATION:-$REGION}"

# --- naming (the same as infra/terraform/main.tf) ------------------------------------------------------------
RUN_SA="${NAME}-run@${PROJECT}.iam.gserviceaccount.com"
SCHED_SA="${NAME}-sched@${PROJECT}.iam.gserviceaccount.com"
BUILD_SA="${NAME}-build@${PROJECT}.iam.gserviceaccount.com"
ROLE_PREFIX="${NAME//-/_}"
VAULT_ROLE="${ROLE_PREFIX}_vault"
CREATOR_ROLE="${ROLE_PREFIX}_secret_creator"
# Key shards: {SECRET_PREFIX}-{group}-keys-{n}, created by the function. "_" cannot occur in a NAME, so
# "NAME_vault-" is the prefix of this deployment's shards and of no other deployment's secrets (see main.tf).
LEGACY_SECRET_PREFIX="${NAME}-vault"
SECRET_PREFIX="${SECRET_PREFIX:-${NAME}_vault}"
AUTH_KEY_SECRET="${NAME}-auth-key" # outside SECRET_PREFIX: the function may only read it
ENCRYPTION_KEY_SECRET="${NAME}-encryption-key" # the same: created here once, read-only for the function
JOB="${NAME}-maintenance"
IMAGES_REPO="${NAME}-functions" # the service's images, with a cleanup policy (same as function.tf)
CONSOLE_BUCKET_NAME="${PROJECT}-${NAME}-console"
# Deterministic (no need to deploy first); the scheduler sends it as the token's audience and the function
# compares it exactly (OIDC_AUDIENCE). See infra/terraform/main.tf.
MAINTENANCE_AUDIENCE="https://${REGION}-${PROJECT}.cloudfunctions.net/${NAME}/api/tasks/run"
if $CONSOLE_BUCKET; then
  ALLOWED_ORIGINS="${ALLOWED_ORIGINS:+${ALLOWED_ORIGINS},}https://storage.googleapis.com"
fi

# --- helpers -----------------------------------------------------------------------------------------------
# Every gcloud command is echoed: "+ ..." changes something, "? ..." only reads. A dry run echoes and runs nothing.
say() { printf '\n# %s\n' "$*"; }
show() { printf '%s' "$1"; shift; printf ' %q' "$@"; printf '\n'; }
run() { show + "$@"; $DRY_RUN || "$@"; }
# exists CMD...: does the described resource exist? A dry run answers "no".
exists() {
  show '?' "$@"
  if $DRY_RUN; then return 1; fi
  "$@" >/dev/null 2>&1
}
die() { echo "deploy.sh: $*" >&2; exit 1; }
# read_into VAR PLACEHOLDER CMD...: VAR = the output of a read-only call; a dry run uses PLACEHOLDER. A failed
# call stops the script (its output is not taken for an answer).
read_into() {
  local var="$1" placeholder="$2" value; shift 2
  show '?' "$@"
  if $DRY_RUN; then
    value="$placeholder"
  else
    value="$("$@")" || die "failed: $*"
  fi
  printf -v "$var" '%s' "$value"
}
# retry CMD...: run (and echo) a change, again after each of DEPLOY_RETRY_DELAYS while it fails.
RETRY_DELAYS="${DEPLOY_RETRY_DELAYS:-5 10 20 40}"
retry() {
  local delay
  show + "$@"
  if $DRY_RUN; then return 0; fi
  for delay in $RETRY_DELAYS; do
    if "$@"; then return 0; fi
    echo "deploy.sh: failed; retrying in ${delay}s (IAM may not know a new service account yet)" >&2
    sleep "$delay"
  done
  "$@" || die "failed after retries: $*"
}
TMP_FILES=()
cleanup() { if [ ${#TMP_FILES[@]} -gt 0 ]; then rm -rf "${TMP_FILES[@]}"; fi; }
trap cleanup EXIT
G=(--project="$PROJECT")

# --- 1. APIs -----------------------------------------------------------------------------------------------
say "APIs"
run gcloud services enable artifactregistry.googleapis.com cloudbuild.googleapis.com \
  cloudresourcemanager.googleapis.com cloudscheduler.googleapis.com firestore.googleapis.com iam.googleapis.com \
  logging.googleapis.com run.googleapis.com secretmanager.googleapis.com storage.googleapis.com "${G[@]}"

read_into PROJECT_NUMBER PROJECT_NUMBER gcloud projects describe "$PROJECT" --format='value(projectNumber)'
# IAM conditions name secrets by project number: without it every vault call would be denied at run time.
$DRY_RUN || [[ "$PROJECT_NUMBER" =~ ^[0-9]+$ ]] || die "no project number for ${PROJECT} (got '${PROJECT_NUMBER}')"

# Deployments made before the prefix became NAME_vault keep their keys in NAME-vault-* secrets: say so rather
# than deploy a function that looks for them under the new prefix.
if [ "$SECRET_PREFIX" = "${NAME}_vault" ]; then
  read_into LEGACY_SECRET "" gcloud secrets list "${G[@]}" --filter="name~/secrets/${LEGACY_SECRET_PREFIX}-[^_]+-keys-[0-9]+$" \
    --limit=1 --format='value(name)'
  [ -z "$LEGACY_SECRET" ] || die "key secrets of the old layout exist (${LEGACY_SECRET}): re-run with" \
    "--secret-prefix ${LEGACY_SECRET_PREFIX} to keep using them (README: \"Key secrets of older deployments\")"
fi
VAULT_SECRETS="projects/${PROJECT_NUMBER}/secrets/${SECRET_PREFIX}-"

# --- 2. service accounts -----------------------------------------------------------------------------------
say "service accounts: runtime, scheduler (OIDC caller), build"
for pair in "run:gptload function runtime" "sched:gptload maintenance scheduler" "build:gptload function build"; do
  suffix="${pair%%:*}"
  email="${NAME}-${suffix}@${PROJECT}.iam.gserviceaccount.com"
  exists gcloud iam service-accounts describe "$email" "${G[@]}" \
    || run gcloud iam service-accounts create "${NAME}-${suffix}" --display-name="${pair#*:}" "${G[@]}"
done

# --- 3. IAM (no primitive roles; see infra/terraform/iam.tf for the reasoning) -----------------------------
say "custom roles: the vault's five Secret Manager calls, split so that create can carry its own condition"
ensure_role() { # ensure_role ID TITLE PERMISSIONS
  local state
  if exists gcloud iam roles describe "$1" "${G[@]}"; then
    read_into state False gcloud iam roles describe "$1" "${G[@]}" --format='value(deleted)'
    if [ "$state" = "True" ]; then run gcloud iam roles undelete "$1" "${G[@]}"; fi
    run gcloud iam roles update "$1" "${G[@]}" --title="$2" --permissions="$3" --stage=GA --quiet
  else
    run gcloud iam roles create "$1" "${G[@]}" --title="$2" --permissions="$3" --stage=GA
  fi
}
ensure_role "$VAULT_ROLE" "gptload key vault (${NAME})" \
  "secretmanager.secrets.delete,secretmanager.versions.access,secretmanager.versions.add,secretmanager.versions.destroy"
ensure_role "$CREATOR_ROLE" "gptload shard creator (${NAME})" "secretmanager.secrets.create"

say "bindings"
bind() { # bind MEMBER ROLE [CONDITION_EXPRESSION TITLE]
  local args=(gcloud projects add-iam-policy-binding "$PROJECT" --member="$1" --role="$2")
  if [ $# -ge 4 ]; then args+=("--condition=expression=$3,title=$4"); else args+=(--condition=None); fi
  retry "${args[@]}" --quiet --format=none
}
bind "serviceAccount:${RUN_SA}" roles/datastore.user \
  "resource.name == \"projects/${PROJECT}/databases/${DATABASE}\"" "${NAME} database only"
bind "serviceAccount:${RUN_SA}" "projects/${PROJECT}/roles/${VAULT_ROLE}" \
  "resource.name.startsWith(\"${VAULT_SECRETS}\")" "${NAME} vault secrets only"
bind "serviceAccount:${RUN_SA}" "projects/${PROJECT}/roles/${CREATOR_ROLE}" \
  "resource.type != \"secretmanager.googleapis.com/Secret\" || resource.name.startsWith(\"${VAULT_SECRETS}\")" \
  "${NAME} vault secrets only"
for role in roles/artifactregistry.writer roles/logging.logWriter roles/storage.objectViewer; do
  bind "serviceAccount:${BUILD_SA}" "$role"
done

# --- 4. Firestore --------------------------------------------------------------------------------------------
say "Firestore database ${DATABASE} (native mode, delete protection)"
exists gcloud firestore databases describe --database="$DATABASE" "${G[@]}" \
  || run gcloud firestore databases create --database="$DATABASE" --location="$FIRESTORE_LOCATION" \
    --type=firestore-native --delete-protection "${G[@]}"

say "composite indexes, single-field index exemptions and TTL policies (gptload/store/firestore/schema.py)"
existing_json=""
if ! $DRY_RUN; then
  existing_json="$(mktemp)"
  TMP_FILES+=("$existing_json")
  show '?' gcloud firestore indexes composite list --database="$DATABASE" "${G[@]}" --format=json
  gcloud firestore indexes composite list --database="$DATABASE" "${G[@]}" --format=json >"$existing_json"
fi
# Generated first, then run: a failure of the generator stops the script (a `< <(...)` loop would ignore it).
# Indexes of earlier versions that no query uses any more are named on stderr (with the delete command), not deleted.
index_commands="$(python3 infra/indexes.py gcloud --project="$PROJECT" --database="$DATABASE" \
  ${existing_json:+--existing="$existing_json"})" || die "infra/indexes.py failed: no indexes or TTL policies"
cmd=()
while IFS= read -r line; do
  [ -n "$line" ] || continue
  eval "cmd=($line)" # shlex-quoted by infra/indexes.py
  run "${cmd[@]}"
done <<<"$index_commands"

# --- 5. AUTH_KEY ---------------------------------------------------------------------------------------------
say "AUTH_KEY (admin password) in Secret Manager secret ${AUTH_KEY_SECRET}"
exists gcloud secrets describe "$AUTH_KEY_SECRET" "${G[@]}" \
  || run gcloud secrets create "$AUTH_KEY_SECRET" --replication-policy=automatic "${G[@]}"
# A version of its own, not "the secret exists": a run stopped between create and add left it without one.
read_into AUTH_KEY_VERSION "" gcloud secrets versions list "$AUTH_KEY_SECRET" "${G[@]}" --filter=state:ENABLED \
  --limit=1 --format='value(name)'
if [ -z "$AUTH_KEY_VERSION" ]; then
  printf '+ python3 -c %q | gcloud secrets versions add %q --data-file=- --project=%q\n' \
    'import secrets; print(secrets.token_urlsafe(24), end="")' "$AUTH_KEY_SECRET" "$PROJECT"
  if ! $DRY_RUN; then
    python3 -c 'import secrets; print(secrets.token_urlsafe(24), end="")' \
      | gcloud secrets versions add "$AUTH_KEY_SECRET" --data-file=- "${G[@]}" --format=none
  fi
fi
retry gcloud secrets add-iam-policy-binding "$AUTH_KEY_SECRET" --member="serviceAccount:${RUN_SA}" \
  --role=roles/secretmanager.secretAccessor "${G[@]}" --format=none

# --- 5b. ENCRYPTION_KEY ----------------------------------------------------------------------------------------
# The passphrase of the AES-GCM key that seals proxy_url credentials (http://user:pass@proxy:3128) in Firestore;
# without it the service refuses a proxy_url with credentials. Generated on the first deploy only and NEVER rotated
# by a re-deploy: a new key would make every sealed proxy_url unreadable (the proxy then answers 407 rather than
# going out directly; re-entering each proxy_url is the only way back). Hence: a version is added only when the
# secret has none at all; versions that exist but are all disabled or destroyed stop the script (re-enable the one
# the service used; a new key is a decision for a person, README "Deploy to Google Cloud").
say "ENCRYPTION_KEY (seals proxy_url credentials; never rotated) in Secret Manager secret ${ENCRYPTION_KEY_SECRET}"
exists gcloud secrets describe "$ENCRYPTION_KEY_SECRET" "${G[@]}" \
  || run gcloud secrets create "$ENCRYPTION_KEY_SECRET" --replication-policy=automatic "${G[@]}"
read_into ENCRYPTION_KEY_VERSION "" gcloud secrets versions list "$ENCRYPTION_KEY_SECRET" "${G[@]}" \
  --filter=state:ENABLED --limit=1 --format='value(name)'
if [ -z "$ENCRYPTION_KEY_VERSION" ]; then
  read_into ENCRYPTION_KEY_ANY_VERSION "" gcloud secrets versions list "$ENCRYPTION_KEY_SECRET" "${G[@]}" \
    --limit=1 --format='value(name)'
  [ -z "$ENCRYPTION_KEY_ANY_VERSION" ] || die "secret ${ENCRYPTION_KEY_SECRET} has versions but no enabled version:" \
    "re-enable the one the service used (gcloud secrets versions list ${ENCRYPTION_KEY_SECRET} --project=${PROJECT};" \
    "gcloud secrets versions enable VERSION --secret=${ENCRYPTION_KEY_SECRET} --project=${PROJECT}). A new key" \
    "makes every sealed proxy_url unreadable: to start over, add a version yourself and re-enter each proxy_url."
  printf '+ python3 -c %q | gcloud secrets versions add %q --data-file=- --project=%q\n' \
    'import secrets; print(secrets.token_urlsafe(48), end="")' "$ENCRYPTION_KEY_SECRET" "$PROJECT"
  if ! $DRY_RUN; then
    python3 -c 'import secrets; print(secrets.token_urlsafe(48), end="")' \
      | gcloud secrets versions add "$ENCRYPTION_KEY_SECRET" --data-file=- "${G[@]}" --format=none
  fi
fi
retry gcloud secrets add-iam-policy-binding "$ENCRYPTION_KEY_SECRET" --member="serviceAccount:${RUN_SA}" \
  --role=roles/secretmanager.secretAccessor "${G[@]}" --format=none

# --- 6. the function -----------------------------------------------------------------------------------------
say "image repository ${IMAGES_REPO}: keep the 2 newest images, delete the rest after 7 days"
exists gcloud artifacts repositories describe "$IMAGES_REPO" --location="$REGION" "${G[@]}" \
  || run gcloud artifacts repositories create "$IMAGES_REPO" --repository-format=docker --location="$REGION" \
    --description="gptload function images" "${G[@]}"
run gcloud artifacts repositories set-cleanup-policies "$IMAGES_REPO" --location="$REGION" \
  --policy=infra/artifact-cleanup-policy.json --no-dry-run "${G[@]}" --format=none

# A Cloud Run service built from source with the functions framework (entry point handler), not a Cloud Functions
# function: the Live API needs WebSocket upgrades, which Cloud Run services document (README, "Deploy").
# A deployment made as a function has a Cloud Run service of the same name that Cloud Functions manages: the
# function goes first (its URL, state and secrets are kept: the new service takes the name and the same secrets).
if exists gcloud functions describe "$NAME" --gen2 --region="$REGION" "${G[@]}"; then
  say "function ${NAME} of an older deployment: deleted, the service below replaces it"
  run gcloud functions delete "$NAME" --gen2 --region="$REGION" "${G[@]}" --quiet
fi
say "service ${NAME} (python312, entry point handler; public: it authenticates proxy keys and AUTH_KEY itself)"
# '^|^' makes | the separator, so ALLOWED_ORIGINS may contain commas (gcloud topic escaping).
ENV_VARS="^|^STORE=firestore|VAULT=secretmanager|GOOGLE_CLOUD_PROJECT=${PROJECT}|FIRESTORE_DATABASE=${DATABASE}"
ENV_VARS+="|SECRET_PREFIX=${SECRET_PREFIX}|THREADS=${CONCURRENCY}|STATE_REFRESH_SECONDS=${STATE_REFRESH_SECONDS}"
# Cloud Run sends an instance at most its concurrency (= THREADS): Live sessions may take every thread there.
ENV_VARS+="|LIVE_MAX_SESSIONS=${CONCURRENCY}"
ENV_VARS+="|ALLOWED_ORIGINS=${ALLOWED_ORIGINS}|OIDC_AUDIENCE=${MAINTENANCE_AUDIENCE}"
ENV_VARS+="|OIDC_SERVICE_ACCOUNT=${SCHED_SA}|LOG_LEVEL=${LOG_LEVEL}"
ENV_VARS+="|TRUSTED_PROXY_HOPS=1"  # Google's front end: the one proxy whose X-Forwarded-For entry is believed
run gcloud run deploy "$NAME" --region="$REGION" "${G[@]}" \
  --source=. --function=handler --base-image=python312 \
  --image="${REGION}-docker.pkg.dev/${PROJECT}/${IMAGES_REPO}/${NAME}" --allow-unauthenticated \
  --service-account="$RUN_SA" --build-service-account="projects/${PROJECT}/serviceAccounts/${BUILD_SA}" \
  --concurrency="$CONCURRENCY" --cpu="$CPU" --memory="$MEMORY" --timeout="${TIMEOUT}s" \
  --min-instances="$MIN_INSTANCES" --max-instances="$MAX_INSTANCES" --session-affinity --no-use-http2 \
  --set-env-vars="$ENV_VARS" \
  --set-secrets="AUTH_KEY=${AUTH_KEY_SECRET}:latest,ENCRYPTION_KEY=${ENCRYPTION_KEY_SECRET}:latest" --quiet

read_into URL 'https://SERVICE-URL.run.app' gcloud run services describe "$NAME" --region="$REGION" "${G[@]}" \
  --format='value(status.url)'

# --- 7. maintenance schedule -------------------------------------------------------------------------------
say "scheduler: ${SCHED_SA} may invoke this function only; job ${JOB} POSTs ${URL}/api/tasks/run with an OIDC token"
retry gcloud run services add-iam-policy-binding "$NAME" --region="$REGION" "${G[@]}" \
  --member="serviceAccount:${SCHED_SA}" --role=roles/run.invoker --format=none
JOB_FLAGS=(--location="$REGION" "${G[@]}" --schedule="$SCHEDULE" --time-zone=Etc/UTC --uri="${URL}/api/tasks/run"
  --http-method=POST --oidc-service-account-email="$SCHED_SA" --oidc-token-audience="$MAINTENANCE_AUDIENCE"
  --attempt-deadline=600s --max-retry-attempts=0)
if exists gcloud scheduler jobs describe "$JOB" --location="$REGION" "${G[@]}"; then
  run gcloud scheduler jobs update http "$JOB" "${JOB_FLAGS[@]}"
else
  run gcloud scheduler jobs create http "$JOB" "${JOB_FLAGS[@]}"
fi

# --- 8. optional console bucket ----------------------------------------------------------------------------
CONSOLE_URL="${URL}/"
if $CONSOLE_BUCKET; then
  say "console bucket gs://${CONSOLE_BUCKET_NAME} (admin_ui/ with config.js naming the function)"
  exists gcloud storage buckets describe "gs://${CONSOLE_BUCKET_NAME}" "${G[@]}" \
    || run gcloud storage buckets create "gs://${CONSOLE_BUCKET_NAME}" --location="$REGION" \
      --uniform-bucket-level-access "${G[@]}"
  run gcloud storage buckets add-iam-policy-binding "gs://${CONSOLE_BUCKET_NAME}" --member=allUsers \
    --role=roles/storage.objectViewer "${G[@]}" --format=none
  staging="admin_ui"
  if ! $DRY_RUN; then
    staging="$(mktemp -d)"
    TMP_FILES+=("$staging")
    cp -R admin_ui/. "$staging/"
    printf '// Generated by infra/deploy.sh: where the admin API lives.\nexport const API_BASE = "%s";\n' "$URL" \
      >"$staging/config.js"
  fi
  printf '# console copy: admin_ui/ with config.js = export const API_BASE = "%s";\n' "$URL"
  run gcloud storage rsync "$staging" "gs://${CONSOLE_BUCKET_NAME}" --recursive --delete-unmatched-destination-objects \
    --cache-control=no-cache "${G[@]}"
  CONSOLE_URL="https://storage.googleapis.com/${CONSOLE_BUCKET_NAME}/index.html"
fi

DONE_NOTE=""
if $DRY_RUN; then DONE_NOTE=" (dry run: nothing was executed)"; fi
cat <<EOF

# Done${DONE_NOTE}.
#   function URL:   ${URL}
#   console:        ${CONSOLE_URL}
#   admin password: gcloud secrets versions access latest --secret=${AUTH_KEY_SECRET} --project=${PROJECT}
#   ENCRYPTION_KEY: secret ${ENCRYPTION_KEY_SECRET} (seals proxy_url credentials; never change it, README)
#   SDK base URL:   ${URL}/proxy/GROUP   (api_key = a proxy key of that group)
#   Composite indexes build for a few minutes; request-log filters need them.
EOF
