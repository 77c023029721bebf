# Policy of the certflow worker's Vault token: least privilege for the lifecycle activities.
# Mount paths assume the defaults (transit, pki, role certflow, KV v2 at secret, prefix certflow).

# One transit key per certificate lifecycle: create, read, rotate, CSR, export (only for
# delivered keys), and delete once the lifecycle has ended (after allowing it in its config).
path "transit/keys/certflow-*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "transit/keys/certflow-+/config" {
  capabilities = ["update"]
}
path "transit/keys/certflow-+/rotate" {
  capabilities = ["update"]
}
path "transit/keys/certflow-+/csr" {
  capabilities = ["update"]
}
# Key versions of certificates no longer in force are removed for good.
path "transit/keys/certflow-+/trim" {
  capabilities = ["update"]
}
path "transit/export/signing-key/certflow-*" {
  capabilities = ["read"]
}

# Vault PKI as a CA: sign CSRs with the certflow role, revoke, and look certificates up.
path "pki/sign/certflow" {
  capabilities = ["update"]
}
path "pki/revoke" {
  capabilities = ["update"]
}
path "pki/certs" {
  capabilities = ["list"]
}
# The same listing with each certificate's names (OpenBao): recovering an interrupted order
# reads only that certificate's candidates.
path "pki/certs/detailed" {
  capabilities = ["list"]
}
path "pki/cert/*" {
  capabilities = ["read"]
}

# Certificate records and the issuance ledger.
path "secret/data/certflow/*" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/certflow/*" {
  capabilities = ["read", "list"]
}
# A record an earlier release kept at apps/<application>/... (readable by any tenant's role of
# that application) is moved to apps/<tenant>.<application>/ and removed, all versions, there.
path "secret/metadata/certflow/apps/*" {
  capabilities = ["read", "list", "delete"]
}
# Superseded and revoked versions of a record are destroyed, so no earlier private key stays
# readable with `kv get -version=N`.
path "secret/destroy/certflow/*" {
  capabilities = ["update"]
}
