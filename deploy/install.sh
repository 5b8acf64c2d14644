#!/usr/bin/env bash
# Install emotion-edge as a systemd service on Raspberry Pi OS Bookworm (Python 3.11) or Trixie (3.13).
#
#   sudo deploy/install.sh                    # LiteRT (ai-edge-litert) runtime, numpy 2
#   sudo deploy/install.sh --tflite-runtime   # legacy tflite-runtime, Python <= 3.11 only
#   deploy/install.sh --dry-run               # print what would be done, change nothing
#   deploy/install.sh --prefix /tmp/stage     # install into a staging root (tests, image builds)
#
# Re-running upgrades the code and keeps an existing config and password file.
set -euo pipefail

APP=emotion-edge
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
# The system interpreter, not e.g. a pyenv shim: apt's python3-picamera2 lives in its dist-packages.
PYTHON=${PYTHON:-/usr/bin/python3}
PREFIX=""
DRY_RUN=0
RUNTIME=litert
SKIP_APT=0
SKIP_VENV=0

usage() {
    cat <<EOF
Usage: $0 [options]
  --tflite-runtime  use tflite-runtime instead of ai-edge-litert (Python <= 3.11, numpy<2)
  --dry-run         print the commands instead of running them
  --prefix DIR      install below DIR instead of / (skips apt, modprobe and systemctl start/reload)
  --repo DIR        project checkout to install (default: $REPO)
  --skip-apt        do not install apt packages
  --skip-venv       do not create/update the virtualenv (config, user and unit only)
  -h, --help        this text
Environment: PYTHON (default /usr/bin/python3) is the interpreter the venv is built from.
EOF
}

while (($#)); do
    case $1 in
        --tflite-runtime) RUNTIME=tflite ;;
        --dry-run) DRY_RUN=1 ;;
        --prefix)
            [[ $# -ge 2 ]] || { usage >&2; exit 2; }
            PREFIX=${2%/}
            shift
            ;;
        --repo)
            [[ $# -ge 2 ]] || { usage >&2; exit 2; }
            REPO=$(cd "$2" && pwd)
            shift
            ;;
        --skip-apt) SKIP_APT=1 ;;
        --skip-venv) SKIP_VENV=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

VENV=$PREFIX/opt/$APP/venv
ETC=$PREFIX/etc/$APP
UNIT_DIR=$PREFIX/etc/systemd/system
SYSUSERS_DIR=$PREFIX/etc/sysusers.d
MODULES_DIR=$PREFIX/etc/modules-load.d

log() { printf '==> %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# Every change to the system goes through run/write_file so that --dry-run shows exactly what would happen.
run() {
    if ((DRY_RUN)); then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

write_file() { # write_file MODE DEST CONTENT
    local mode=$1 dest=$2 content=$3
    if ((DRY_RUN)); then
        printf '+ write %s (mode %s):\n' "$dest" "$mode"
        printf '%s\n' "$content" | sed 's/^/|   /'
    else
        printf '%s\n' "$content" | install -m "$mode" /dev/stdin "$dest"
    fi
}

# Ownership only means something on the real root: a staging --prefix has no emotion-edge group yet.
chown_real() {
    if [[ -z $PREFIX ]]; then
        run chown "$@"
    fi
}

if [[ $DRY_RUN -eq 0 && -z $PREFIX && $EUID -ne 0 ]]; then
    die "run as root (sudo $0), or use --dry-run / --prefix"
fi
[[ -f $REPO/pyproject.toml ]] || die "$REPO is not the emotion-edge checkout (no pyproject.toml)"
[[ -x $PYTHON ]] || die "python interpreter $PYTHON not found (set PYTHON=...)"

PY_MINOR=$("$PYTHON" -c 'import sys; print(sys.version_info[1])')
PY_MAJOR=$("$PYTHON" -c 'import sys; print(sys.version_info[0])')
PY_VERSION=$PY_MAJOR.$PY_MINOR
log "Python $PY_VERSION ($PYTHON), runtime: $RUNTIME, prefix: ${PREFIX:-/}"
if ((PY_MAJOR != 3 || PY_MINOR < 11)); then
    die "Python >= 3.11 required (Raspberry Pi OS Bookworm or newer); found $PY_VERSION"
fi
# tflite-runtime stopped at 2.14: its wheels are built against numpy 1.x (so numpy<2) and none exist for
# Python 3.12+ (Trixie ships 3.13). ai-edge-litert is the maintained successor with 3.11-3.13 and numpy 2
# wheels, which is why it is the default.
if [[ $RUNTIME == tflite ]] && ((PY_MINOR > 11)); then
    die "--tflite-runtime needs Python <= 3.11 (no tflite-runtime wheels for $PY_VERSION); use the default ai-edge-litert"
fi
case $(uname -m) in
    aarch64 | x86_64) ;;
    *) warn "$(uname -m): ai-edge-litert publishes aarch64/x86_64 wheels only; use the 64-bit Raspberry Pi OS" ;;
esac

# --- apt packages -------------------------------------------------------------------------------------
HAVE_PICAMERA2=0
if ((SKIP_APT)) || [[ -n $PREFIX ]]; then
    log "skipping apt packages"
    if "$PYTHON" -c 'import picamera2' >/dev/null 2>&1; then HAVE_PICAMERA2=1; fi
else
    packages=(python3-venv mosquitto-clients)
    # picamera2 (libcamera bindings) is only packaged by Raspberry Pi OS, never on PyPI in a usable form:
    # it has to come from apt and be seen through --system-site-packages.
    if apt-cache show python3-picamera2 >/dev/null 2>&1; then
        packages+=(python3-picamera2)
        HAVE_PICAMERA2=1
    else
        warn "python3-picamera2 not available from apt: camera modality will be unavailable"
    fi
    run apt-get update
    # --no-install-recommends keeps picamera2's Qt/OpenGL preview stack off a headless Pi.
    run apt-get install -y --no-install-recommends "${packages[@]}"
fi

# --- user ---------------------------------------------------------------------------------------------
log "service user $APP (groups dialout, video)"
run install -d -m 0755 "$SYSUSERS_DIR"
run install -m 0644 "$REPO/systemd/$APP.sysusers.conf" "$SYSUSERS_DIR/$APP.conf"
if command -v systemd-sysusers >/dev/null 2>&1; then
    if [[ -n $PREFIX ]]; then
        run systemd-sysusers --root="$PREFIX" "$SYSUSERS_DIR/$APP.conf"
    else
        run systemd-sysusers "$SYSUSERS_DIR/$APP.conf"
    fi
elif [[ -n $PREFIX ]]; then
    warn "systemd-sysusers not found: no user created under $PREFIX"
elif id "$APP" >/dev/null 2>&1; then
    run usermod -a -G dialout,video "$APP"
else
    run useradd --system --user-group --home-dir "/var/lib/$APP" --no-create-home \
        --shell /usr/sbin/nologin --comment "$APP daemon" --groups dialout,video "$APP"
fi

# --- virtualenv ---------------------------------------------------------------------------------------
if ((SKIP_VENV)); then
    log "skipping virtualenv"
else
    log "virtualenv $VENV"
    # --system-site-packages makes apt's python3-picamera2/libcamera importable; pip-installed packages
    # still take precedence over the system ones.
    run install -d -m 0755 "$(dirname "$VENV")"
    run "$PYTHON" -m venv --system-site-packages "$VENV"
    run "$VENV/bin/python" -m pip install --upgrade pip

    extra=()
    if ((HAVE_PICAMERA2)); then
        # apt's simplejpeg (imported by picamera2) is built against the distro numpy (1.24 on Bookworm); the
        # venv's numpy shadows it, and a numpy 1/2 ABI mismatch breaks `import picamera2`. A venv copy of
        # simplejpeg is built for the venv's numpy.
        extra+=(simplejpeg)
    fi
    if [[ $RUNTIME == litert ]]; then
        run "$VENV/bin/python" -m pip install --upgrade "$REPO" "${extra[@]}"
    else
        # ai-edge-litert is a hard dependency of the project (and would be picked first by
        # edge.interpreter), so install the other dependencies from pyproject.toml by hand, pin numpy<2 for
        # tflite-runtime 2.14, and install the project itself without dependencies.
        deps_py='import sys, tomllib
for dep in tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]:
    if not dep.replace("_", "-").lower().startswith("ai-edge-litert"):
        print(dep)'
        deps_out=$("$PYTHON" -c "$deps_py" "$REPO/pyproject.toml") || die "cannot read dependencies from pyproject.toml"
        mapfile -t deps <<<"$deps_out"
        run "$VENV/bin/python" -m pip install --upgrade "${deps[@]}" "tflite-runtime>=2.14" "numpy<2" "${extra[@]}"
        run "$VENV/bin/python" -m pip install --upgrade --no-deps "$REPO"
    fi
    if ((HAVE_PICAMERA2 && !DRY_RUN)) && ! "$VENV/bin/python" -c 'import picamera2' >/dev/null 2>&1; then
        warn "picamera2 is installed but does not import in $VENV: check '$VENV/bin/python -c \"import picamera2\"'"
    fi
fi

# --- configuration ------------------------------------------------------------------------------------
log "configuration $ETC"
# root owns the config so a compromised daemon cannot rewrite it; the group lets the daemon read it.
run install -d -m 0750 "$ETC"
chown_real root:"$APP" "$ETC"
if [[ -e $ETC/config.toml ]]; then
    log "keeping existing $ETC/config.toml"
else
    run install -m 0640 "$REPO/deploy/config.example.toml" "$ETC/config.toml"
    chown_real root:"$APP" "$ETC/config.toml"
fi
# Read by systemd (as root) and handed to the daemon via LoadCredential=, so only root needs access. The
# unit cannot start while the file is missing, hence a placeholder; the daemon rejects it until it is
# filled in, with a config error naming the file.
NEW_PASSWORD_FILE=0
if [[ ! -e $ETC/mqtt_password ]]; then
    run install -m 0600 /dev/null "$ETC/mqtt_password"
    chown_real root:root "$ETC/mqtt_password"
    NEW_PASSWORD_FILE=1
fi

# --- kernel modules -----------------------------------------------------------------------------------
# The unit's DeviceAllow=char-ttyACM/char-ttyUSB only match drivers registered when the service starts;
# loading them at boot means a board plugged in later is still allowed.
run install -d -m 0755 "$MODULES_DIR"
write_file 0644 "$MODULES_DIR/$APP.conf" "# emotion-edge: USB serial drivers for the EMG board (see $APP.service DeviceAllow=)
cdc_acm
usbserial"
if [[ -z $PREFIX ]]; then
    run modprobe -a cdc_acm usbserial || warn "could not load cdc_acm/usbserial now; they load at next boot"
fi

# --- systemd unit -------------------------------------------------------------------------------------
log "systemd unit $UNIT_DIR/$APP.service"
run install -d -m 0755 "$UNIT_DIR"
run install -m 0644 "$REPO/systemd/$APP.service" "$UNIT_DIR/$APP.service"
if [[ -n $PREFIX ]]; then
    run systemctl --root="$PREFIX" enable "$APP.service"
else
    run systemctl daemon-reload
    run systemctl enable "$APP.service"
    # Upgrade in place if it is already running; a fresh install waits until the config is edited.
    run systemctl try-restart "$APP.service"
fi

echo
log "done; next steps:"
echo "  - edit $ETC/config.toml (MQTT host, serial port, baud rate matching the Arduino sketch)"
if ((NEW_PASSWORD_FILE)); then
    echo "  - write the MQTT password into $ETC/mqtt_password (an empty placeholder now; keep it 0600 root)."
    echo "    Broker without authentication: 'systemctl edit $APP' and add [Service] LoadCredential= instead"
fi
echo "  - sudo systemctl start $APP.service && journalctl -u $APP.service -f"
