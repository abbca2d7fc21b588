# scripts/lib/tls.sh - what the TLS test (tests/tests/tls.rs) needs: openssl to make its CA, and a
# Postgres server built with SSL (Debian's; the pgvector wheel's is not).
# shellcheck shell=bash

# tls_tools_up: what tests/tests/tls.rs needs besides Redis: openssl (it makes a CA) and Debian's
# PostgreSQL server binaries (built with SSL; the pgvector wheel's server is not). Installs them
# with apt-get only when missing.
tls_tools_up() {
  local need=()
  have openssl || need+=(openssl)
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
  [ ${#need[@]} -eq 0 ] && return 0
  is_root || die "missing ${need[*]} (apt-get install -y ${need[*]}, as root)"
  say "installing ${need[*]} with apt-get"
  apt-get install -y -qq "${need[@]}" >/dev/null || {
    apt-get update -qq >/dev/null || true
    apt-get install -y -qq "${need[@]}" >/dev/null || die "apt-get install ${need[*]} failed"
  }
}

tls_tools_status() {
  if have openssl && compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    echo "ready (openssl, $(compgen -G '/usr/lib/postgresql/*/bin/initdb' | head -n 1))"
  else
    echo "missing (scripts/setup tls)"; return 1
  fi
}
