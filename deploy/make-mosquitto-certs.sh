#!/usr/bin/env bash
# Create a private CA and a server certificate for mosquitto's opt-in TLS listener (deploy/mosquitto-tls.conf).
#
#   sudo deploy/make-mosquitto-certs.sh                                  # names: this host, host.local, localhost
#   sudo deploy/make-mosquitto-certs.sh --host pi.lan --ip 192.168.1.20  # the names/addresses HA connects to
#   deploy/make-mosquitto-certs.sh --dir /tmp/certs --host localhost     # anywhere, as any user
#
# Writes DIR/ca.crt (give it to Home Assistant), DIR/ca.key (0600, stays here), DIR/server.crt and
# DIR/server.key (0640 root:mosquitto when run as root and that group exists, else 0600). Re-running keeps
# the CA, so clients that trust ca.crt keep working, and issues a new server certificate (e.g. for new
# names, or before the old one expires); --new-ca replaces the CA too.
#
# The certificates pass strict verification (Python 3.13's default, which Home Assistant uses, and
# `openssl verify -x509_strict`): EC P-256, a CA with critical basicConstraints and keyUsage, a server
# certificate with subjectAltName, serverAuth and the CA's key identifier.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=/etc/mosquitto/certs
DAYS=825      # the longest validity that all TLS clients accept for a server certificate
CA_DAYS=3650
NEW_CA=0
CHOWN=1
HOSTS=()
IPS=()

usage() {
    cat <<EOF
Usage: $0 [options]
  --dir DIR       where the files go (default: $DIR)
  --host NAME     a DNS name clients use for this broker (repeatable; the first is the subject CN)
  --ip ADDRESS    an IP address clients use for this broker (repeatable)
  --days N        server certificate validity in days (default: $DAYS)
  --ca-days N     CA validity in days, for a new CA (default: $CA_DAYS)
  --new-ca        replace an existing CA (clients must then trust the new ca.crt)
  --no-chown      leave ownership alone (default as root: server.key group mosquitto, mode 0640)
  -h, --help      this text
Without --host/--ip: $(hostname -s 2>/dev/null || uname -n), $(hostname -s 2>/dev/null || uname -n).local, localhost, 127.0.0.1 and ::1.
EOF
}

die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

while (($#)); do
    case $1 in
        --dir | --host | --ip | --days | --ca-days)
            [[ $# -ge 2 && -n $2 ]] || { usage >&2; exit 2; }
            case $1 in
                --dir) DIR=${2%/} ;;
                --host) HOSTS+=("$2") ;;
                --ip) IPS+=("$2") ;;
                --days) DAYS=$2 ;;
                --ca-days) CA_DAYS=$2 ;;
            esac
            shift
            ;;
        --new-ca) NEW_CA=1 ;;
        --no-chown) CHOWN=0 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

[[ $DAYS =~ ^[1-9][0-9]*$ && $CA_DAYS =~ ^[1-9][0-9]*$ ]] || die "--days and --ca-days take a number of days"
command -v openssl >/dev/null 2>&1 || die "openssl not found (apt-get install openssl)"
if ((${#HOSTS[@]} == 0 && ${#IPS[@]} == 0)); then
    short=$(hostname -s 2>/dev/null || uname -n)
    HOSTS=("$short" "$short.local" localhost)
    IPS=(127.0.0.1 ::1)
fi
for name in "${HOSTS[@]}"; do
    [[ $name =~ ^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]] || die "not a DNS name: $name"
done
for address in "${IPS[@]}"; do
    [[ $address =~ ^[0-9A-Fa-f:.]+$ ]] || die "not an IP address: $address"
done
san=""
for name in "${HOSTS[@]}"; do san+="${san:+,}DNS:$name"; done
for address in "${IPS[@]}"; do san+="${san:+,}IP:$address"; done
subject=${HOSTS[0]:-${IPS[0]}}

umask 077
mkdir -p "$DIR"
chmod 0755 "$DIR"  # mosquitto (not root) must reach the certificate and key
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Only the extensions below, whatever the system's openssl.cnf adds by default.
cat >"$work/openssl.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
[ca_ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF

ossl() { openssl "$@" 2>"$work/openssl.err" || { cat "$work/openssl.err" >&2; die "openssl $1 failed"; }; }
new_key() { ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
serial() { printf '0x%s' "$(openssl rand -hex 16)"; }

if ((NEW_CA)) || [[ ! -s $DIR/ca.key || ! -s $DIR/ca.crt ]]; then
    echo "==> new CA $DIR/ca.crt (valid $CA_DAYS days)"
    new_key "$work/ca.key"
    ossl req -new -x509 -config "$work/openssl.cnf" -extensions ca_ext -key "$work/ca.key" -sha256 \
        -days "$CA_DAYS" -set_serial "$(serial)" -subj "/CN=emotion-edge MQTT CA ($subject)" -out "$work/ca.crt"
    install -m 0600 "$work/ca.key" "$DIR/ca.key"
    install -m 0644 "$work/ca.crt" "$DIR/ca.crt"
else
    echo "==> keeping the CA $DIR/ca.crt"
fi

echo "==> server certificate $DIR/server.crt for $san (valid $DAYS days)"
new_key "$work/server.key"
ossl req -new -config "$work/openssl.cnf" -key "$work/server.key" -subj "/CN=$subject" -out "$work/server.csr"
ossl x509 -req -in "$work/server.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" -set_serial "$(serial)" \
    -sha256 -days "$DAYS" -extfile "$work/openssl.cnf" -extensions server_ext -out "$work/server.crt"
ossl verify -x509_strict -purpose sslserver -CAfile "$DIR/ca.crt" "$work/server.crt" >/dev/null

key_mode=0600
key_group=""
if ((CHOWN)) && [[ $EUID -eq 0 ]] && getent group mosquitto >/dev/null 2>&1; then
    key_mode=0640
    key_group=mosquitto
fi
install -m "$key_mode" "$work/server.key" "$DIR/server.key"
[[ -z $key_group ]] || chown "root:$key_group" "$DIR/server.key"
install -m 0644 "$work/server.crt" "$DIR/server.crt"
if ((CHOWN)) && [[ $EUID -eq 0 && -z $key_group ]]; then
    echo "WARNING: no group mosquitto (is mosquitto installed?): $DIR/server.key is 0600 root" >&2
fi

echo "==> done. Home Assistant (or any client) trusts $DIR/ca.crt and connects to one of: ${san//,/ }"
echo "    The listener (install.sh --broker-tls does this):"
echo "      sudo install -m 0644 $SCRIPT_DIR/mosquitto-tls.conf /etc/mosquitto/conf.d/emotion-edge-tls.conf"
echo "    and sudo systemctl restart mosquitto (also after renewing the server certificate)."
