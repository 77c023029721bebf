# OpenBao as the compose stack runs it: a real server, not `-dev`. Integrated (raft) storage on
# a volume survives restarts and can be backed up (`bao operator raft snapshot save`); the
# listener speaks TLS only; the server starts sealed and deploy/vault/init-unseal.sh initialises
# (first start) and unseals it. A test (tests/tests/openbao_server.rs) runs this same file as a
# process, with only its paths and addresses moved into a temporary directory.

storage "raft" {
  path    = "/openbao/file"
  node_id = "certflow-vault-1"
}

listener "tcp" {
  address         = "0.0.0.0:8200"
  cluster_address = "0.0.0.0:8201"
  tls_cert_file   = "/openbao/tls/vault/server.crt"
  tls_key_file    = "/openbao/tls/vault/server.key"
  tls_min_version = "tls12"
}

api_addr     = "https://vault:8200"
cluster_addr = "https://vault:8201"

# Integrated storage maps its database into memory; mlock would pin all of it.
disable_mlock = true
ui            = false
log_level     = "info"
