# Policy of the certflow worker's Vault token: least privilege for the lifecycle activities.
# Mount paths assume the defaults (transit, pki, role certflow, KV v2 at secret, prefix certflow).

# One transit key per certificate: create, read, rotate, CSR, and export (only for delivered keys).
path "transit/keys/certflow-*" {
  capabilities = ["create", "read", "update"]
}
path "transit/keys/certflow-+/rotate" {
  capabilities = ["update"]
}
path "transit/keys/certflow-+/csr" {
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
