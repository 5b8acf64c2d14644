#!/usr/bin/env bash
# Install emotion-edge as a systemd service on 64-bit Raspberry Pi OS Bookworm (Python 3.11) or Trixie (3.13).
#
#   sudo deploy/install.sh                    # LiteRT (ai-edge-litert) runtime, numpy 2; asks about a broker
#   sudo deploy/install.sh --with-broker      # plus a local mosquitto on localhost:1883, password generated
#   sudo deploy/install.sh --broker-tls       # plus mosquitto's TLS listener on 8883 for Home Assistant
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
BROKER=ask
BROKER_TLS=0
UART=0
# The MQTT user of the example config (mqtt.username) that --with-broker registers with mosquitto.
MQTT_USER=emotion_edge

usage() {
    cat <<EOF
Usage: $0 [options]
  --with-broker     install mosquitto with deploy/mosquitto.conf: a localhost:1883 listener (what the example
                    config uses) with a generated password for the daemon, in /etc/emotion-edge/mqtt_password
  --broker-tls      also enable mosquitto's TLS listener on 8883 for the network (implies --with-broker):
                    CA and server certificate by deploy/make-mosquitto-certs.sh, deploy/mosquitto-tls.conf
  --no-broker       use a broker elsewhere (set mqtt.host in the config); do not ask
  --uart            allow the GPIO UART (/dev/serial0) in the unit: systemd/$APP.service.d/uart.conf
  --tflite-runtime  use tflite-runtime instead of ai-edge-litert (Python <= 3.11, numpy<2)
  --dry-run         print the commands instead of running them
  --prefix DIR      install below DIR instead of / (skips apt, modprobe and systemctl start/reload)
  --repo DIR        project checkout to install (default: $REPO)
  --skip-apt        do not install apt packages
  --skip-venv       do not create/update the virtualenv (config, user and unit only)
  -h, --help        this text
Without --with-broker/--no-broker it asks on a terminal (default: yes) and installs no broker otherwise.
Environment: PYTHON (default /usr/bin/python3) is the interpreter the venv is built from.
EOF
}

while (($#)); do
    case $1 in
        --with-broker) BROKER=yes ;;
        --broker-tls) BROKER=yes; BROKER_TLS=1 ;;
        --no-broker) BROKER=no; BROKER_TLS=0 ;;
        --uart) UART=1 ;;
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
STATE=$PREFIX/var/lib/$APP
BIN_DIR=$PREFIX/usr/local/bin
UNIT_DIR=$PREFIX/etc/systemd/system
SYSUSERS_DIR=$PREFIX/etc/sysusers.d
TMPFILES_DIR=$PREFIX/etc/tmpfiles.d
MODULES_DIR=$PREFIX/etc/modules-load.d
MOSQUITTO_DIR=$PREFIX/etc/mosquitto

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

CLEANUP=()
cleanup() {
    if ((${#CLEANUP[@]})); then
        rm -rf "${CLEANUP[@]}"
    fi
}
trap cleanup EXIT

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

# --- architecture -------------------------------------------------------------------------------------
# The 32-bit Raspberry Pi OS boots a 64-bit kernel on a Pi 3/4/5 (arm_64bit=1 is the default), so
# `uname -m` says aarch64 while dpkg, python3 and therefore pip are 32-bit (armhf) and look for armv7l
# wheels. ai-edge-litert publishes none; tflite-runtime's last armv7l wheels are 2.13 for Python <= 3.9
# (PyPI has none for Bookworm's 3.11), so --tflite-runtime is no way out either.
MACHINE=$(uname -m)
USERLAND=""
if command -v dpkg >/dev/null 2>&1; then
    USERLAND=$(dpkg --print-architecture 2>/dev/null || true)
fi
LONG_BIT=$(getconf LONG_BIT 2>/dev/null || true)
PY_BITS=$("$PYTHON" -c 'import struct; print(struct.calcsize("P") * 8)' 2>/dev/null || true)
BITS_32=0
case $USERLAND in armhf | armel | i386) BITS_32=1 ;; esac
case $MACHINE in armv6l | armv7l | armv8l | i?86) BITS_32=1 ;; esac
if [[ $LONG_BIT == 32 || $PY_BITS == 32 ]]; then BITS_32=1; fi
if ((BITS_32)); then
    if [[ $MACHINE == aarch64 || $MACHINE == x86_64 ]]; then
        what="a 32-bit userland on a 64-bit kernel (uname -m: $MACHINE"
    else
        what="a 32-bit system (uname -m: $MACHINE"
    fi
    why="this is $what, dpkg architecture: ${USERLAND:-unknown}, getconf LONG_BIT: ${LONG_BIT:-unknown}, $PYTHON:"
    why+=" ${PY_BITS:-?}-bit), so pip would need 32-bit ARM (armv7l) wheels. ai-edge-litert has none, and"
    why+=" tflite-runtime has none for Python 3.11+ (its last armv7l wheels are 2.13 for Python <= 3.9), so"
    why+=" --tflite-runtime does not help either. Install the 64-bit Raspberry Pi OS (arm64, Bookworm or"
    why+=" newer) and run this again."
    die "$why"
fi
case $MACHINE in
    aarch64 | x86_64) ;;
    *) warn "$MACHINE: ai-edge-litert publishes aarch64/x86_64 wheels only; use the 64-bit Raspberry Pi OS" ;;
esac

# --- broker -------------------------------------------------------------------------------------------
# The example config publishes to localhost:1883. Ask on a terminal (a --dry-run too, to show the answer's
# plan); scripted runs (no terminal on stdin) and --prefix get no broker unless --with-broker says so, and
# the next steps say how to add one.
if [[ $BROKER == ask ]]; then
    BROKER=no
    if [[ -z $PREFIX && -t 0 ]]; then
        read -r -p "Install a local mosquitto broker on localhost:1883 for the daemon (the example config's)? [Y/n] " answer || answer=n
        case ${answer,,} in "" | y | yes) BROKER=yes ;; esac
    fi
fi
if ((BROKER_TLS)); then log "local MQTT broker: yes, with the TLS listener"; else log "local MQTT broker: $BROKER"; fi

# --- apt packages -------------------------------------------------------------------------------------
HAVE_PICAMERA2=0
if ((SKIP_APT)) || [[ -n $PREFIX ]]; then
    log "skipping apt packages"
    if "$PYTHON" -c 'import picamera2' >/dev/null 2>&1; then HAVE_PICAMERA2=1; fi
else
    packages=(python3-venv mosquitto-clients)
    if [[ $BROKER == yes ]]; then packages+=(mosquitto); fi
    if ((BROKER_TLS)); then packages+=(openssl); fi
    # Refresh the package lists first: on a fresh image they may be empty or stale, and the picamera2
    # lookup below would then miss a package that is there.
    run apt-get update
    # picamera2 (libcamera bindings) is only packaged by Raspberry Pi OS, never on PyPI in a usable form:
    # it has to come from apt and be seen through --system-site-packages.
    if apt-cache show python3-picamera2 >/dev/null 2>&1; then
        packages+=(python3-picamera2)
        HAVE_PICAMERA2=1
    else
        warn "python3-picamera2 not available from apt: camera modality will be unavailable"
    fi
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

# --- state directory ----------------------------------------------------------------------------------
# The unit's StateDirectory= only creates /var/lib/emotion-edge when the service starts; the README's
# `sudo -u emotion-edge emotion-edge models fetch --dest /var/lib/emotion-edge/models` comes before that.
# tmpfiles.d creates it now and at every boot, with the unit's owner and mode (0700 emotion-edge).
log "state directory $STATE"
run install -d -m 0755 "$TMPFILES_DIR"
run install -m 0644 "$REPO/systemd/$APP.tmpfiles.conf" "$TMPFILES_DIR/$APP.conf"
if command -v systemd-tmpfiles >/dev/null 2>&1; then
    if [[ -n $PREFIX ]]; then
        # Resolves emotion-edge in $PREFIX/etc/passwd, so the staged directory has the staged owner.
        run systemd-tmpfiles --root="$PREFIX" --create "$TMPFILES_DIR/$APP.conf"
    else
        run systemd-tmpfiles --create "$TMPFILES_DIR/$APP.conf"
    fi
else
    run install -d -m 0700 "$STATE"
    chown_real "$APP:$APP" "$STATE"
fi

# --- virtualenv ---------------------------------------------------------------------------------------
if ((SKIP_VENV)); then
    log "skipping virtualenv"
else
    log "virtualenv $VENV"
    # pip builds a local source tree in place (build/, *.egg-info). Under sudo that would leave root-owned
    # files in the operator's checkout, so build from a throwaway copy of it instead.
    copy_excludes=(--exclude=./.git --exclude=./.venv --exclude=./venv --exclude=./build --exclude=./dist
        --exclude='*.egg-info' --exclude=__pycache__ --exclude=./.mypy_cache --exclude=./.pytest_cache
        --exclude=./.ruff_cache --exclude=./training/checkpoints --exclude=./runs)
    if ((DRY_RUN)); then
        SRC=${TMPDIR:-/tmp}/$APP-build.XXXXXX/src
        printf '+ copy %s to %s (without .git, virtualenvs, build outputs and checkpoints)\n' "$REPO" "$SRC"
    else
        build_dir=$(mktemp -d "${TMPDIR:-/tmp}/$APP-build.XXXXXX")
        CLEANUP+=("$build_dir")
        SRC=$build_dir/src
        mkdir "$SRC"
        tar -C "$REPO" "${copy_excludes[@]}" -cf - . | tar -C "$SRC" --no-same-owner -xf -
    fi
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
        run "$VENV/bin/python" -m pip install --upgrade "$SRC" "${extra[@]}"
    else
        # ai-edge-litert is a hard dependency of the project (and would be picked first by
        # edge.interpreter), so install the other dependencies from pyproject.toml by hand, pin numpy<2 for
        # tflite-runtime 2.14, and install the project itself without dependencies.
        # opencv-python-headless 4.12+ requires numpy>=2 (4.11.0.86 takes numpy>=1.23.5 on Python 3.11), so
        # it is capped below 4.12. Both caps go into the project's own requirement: as separate arguments
        # pip would first download numpy 2 and ~140 MB of OpenCV 4.14/4.13/4.12 wheels, then backtrack.
        deps_py='import re, sys, tomllib
pins = {"numpy": "<2", "opencv-python-headless": "<4.12"}
for dep in tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]:
    req, sep, marker = dep.partition(";")
    req = req.strip()
    key = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", req).group()).lower()
    if key == "ai-edge-litert":
        continue
    if key in pins:
        req += ("," if re.search(r"[<>=!~]", req) else "") + pins.pop(key)
    print(req + (";" + marker if sep else ""))
for key, pin in pins.items():
    print(key + pin)
print("tflite-runtime>=2.14")'
        deps_out=$("$PYTHON" -c "$deps_py" "$REPO/pyproject.toml") || die "cannot read dependencies from pyproject.toml"
        mapfile -t deps <<<"$deps_out"
        run "$VENV/bin/python" -m pip install --upgrade "${deps[@]}" "${extra[@]}"
        run "$VENV/bin/python" -m pip install --upgrade --no-deps "$SRC"
    fi
    if ((HAVE_PICAMERA2 && !DRY_RUN)) && ! "$VENV/bin/python" -c 'import picamera2' >/dev/null 2>&1; then
        warn "picamera2 is installed but does not import in $VENV: check '$VENV/bin/python -c \"import picamera2\"'"
    fi

    # `emotion-edge` on the admin's PATH, so README commands such as
    # `sudo -u emotion-edge emotion-edge models fetch ...` work as written (sudo's secure_path has
    # /usr/local/bin). Relative, so it also resolves inside a --prefix staging root.
    link=$BIN_DIR/$APP
    if [[ -e $link && ! -L $link ]]; then
        warn "$link exists and is not a symlink: left alone (the daemon is $VENV/bin/$APP)"
    else
        run install -d -m 0755 "$BIN_DIR"
        run ln -sfn "../../../opt/$APP/venv/bin/$APP" "$link"
    fi
fi

# --- configuration ------------------------------------------------------------------------------------
log "configuration $ETC"
# root owns the config so a compromised daemon cannot rewrite it; the group lets the daemon read it.
# The unit's ConfigurationDirectoryMode= is the same 0750.
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
# filled in, with a config error naming the file (--with-broker fills it in).
NEW_PASSWORD_FILE=0
if [[ ! -e $ETC/mqtt_password ]]; then
    run install -m 0600 /dev/null "$ETC/mqtt_password"
    chown_real root:root "$ETC/mqtt_password"
    NEW_PASSWORD_FILE=1
fi

# --- local broker -------------------------------------------------------------------------------------
if [[ $BROKER == yes ]]; then
    log "mosquitto: localhost:1883 ($MOSQUITTO_DIR/conf.d/$APP.conf), user $MQTT_USER"
    run install -d -m 0755 "$MOSQUITTO_DIR/conf.d"
    run install -m 0644 "$REPO/deploy/mosquitto.conf" "$MOSQUITTO_DIR/conf.d/$APP.conf"
    passwd=$MOSQUITTO_DIR/passwd
    # /etc/emotion-edge/mqtt_password is the source of truth: an existing password is kept, an empty
    # placeholder gets a generated one. Either way it is (re-)registered with mosquitto, so the two match.
    if ((DRY_RUN)); then
        printf '+ password for %s: keep %s, or generate one if it is empty; register it in %s\n' \
            "$MQTT_USER" "$ETC/mqtt_password" "$passwd"
    else
        command -v mosquitto_passwd >/dev/null 2>&1 || die "mosquitto_passwd not found (apt-get install mosquitto)"
        password=""
        if [[ -s $ETC/mqtt_password ]]; then
            password=$(<"$ETC/mqtt_password")
            password=${password%$'\r'}
        fi
        if [[ -z $password ]]; then
            password=$("$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(24))')
            (umask 077 && printf '%s' "$password" >"$ETC/mqtt_password")
            log "generated the $MQTT_USER password into $ETC/mqtt_password"
        fi
        [[ -e $passwd ]] || install -m 0600 /dev/null "$passwd"
        # On stdin, not as an argument that other users could read in the process list.
        printf '%s\n%s\n' "$password" "$password" | mosquitto_passwd "$passwd" "$MQTT_USER" >/dev/null \
            || die "mosquitto_passwd could not register $MQTT_USER in $passwd"
        unset password
        chmod 0600 "$passwd"
    fi
    NEW_PASSWORD_FILE=0
    # mosquitto reads it after dropping root (newer 2.0.x warn about any other owner).
    if [[ -z $PREFIX ]] && { ((DRY_RUN)) || getent passwd mosquitto >/dev/null 2>&1; }; then
        run chown mosquitto:mosquitto "$passwd"
    fi
    if ((BROKER_TLS)); then
        log "mosquitto TLS listener :8883 ($MOSQUITTO_DIR/conf.d/$APP-tls.conf)"
        certs_args=(--dir "$MOSQUITTO_DIR/certs")
        if [[ -n $PREFIX ]]; then certs_args+=(--no-chown); fi
        run bash "$REPO/deploy/make-mosquitto-certs.sh" "${certs_args[@]}"
        run install -m 0644 "$REPO/deploy/mosquitto-tls.conf" "$MOSQUITTO_DIR/conf.d/$APP-tls.conf"
    fi
    if [[ -z $PREFIX ]]; then
        run systemctl enable mosquitto.service
        run systemctl restart mosquitto.service
    fi
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
if ((UART)); then
    # DevicePolicy=closed would keep the daemon off /dev/serial0 (/dev/ttyAMA0 or /dev/ttyS0).
    log "drop-in $UNIT_DIR/$APP.service.d/uart.conf (GPIO UART)"
    run install -d -m 0755 "$UNIT_DIR/$APP.service.d"
    run install -m 0644 "$REPO/systemd/$APP.service.d/uart.conf" "$UNIT_DIR/$APP.service.d/uart.conf"
fi
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
if ((UART)); then
    echo "  - GPIO UART: set [emg.serial] port = \"/dev/serial0\"; enable the UART without the serial console"
    echo "    (raspi-config -> Interface Options -> Serial Port: login shell No, hardware Yes) and reboot"
fi
if [[ $BROKER == yes ]]; then
    echo "  - the daemon's MQTT password is in $ETC/mqtt_password and registered with mosquitto (user $MQTT_USER)"
    echo "  - Home Assistant's own user: sudo mosquitto_passwd /etc/mosquitto/passwd homeassistant &&"
    echo "    sudo systemctl restart mosquitto"
    if ((BROKER_TLS)); then
        echo "  - HA connects over TLS to port 8883 and trusts /etc/mosquitto/certs/ca.crt"
    else
        echo "  - HA on another machine: rerun with --broker-tls (TLS listener on 8883)"
    fi
else
    echo "  - MQTT broker: the example config publishes to localhost:1883; rerun with --with-broker for a local"
    echo "    mosquitto, or set mqtt.host (and [mqtt.tls]) to your broker"
fi
if ((NEW_PASSWORD_FILE)); then
    echo "  - write the MQTT password into $ETC/mqtt_password (an empty placeholder now; keep it 0600 root)."
    echo "    Broker without authentication: 'systemctl edit $APP' and add [Service] LoadCredential= instead"
fi
echo "  - sudo systemctl start $APP.service && journalctl -u $APP.service -f"
