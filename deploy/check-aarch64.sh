#!/bin/bash
# Check that emotion-edge installs from binary wheels on arm64 (Raspberry Pi OS 64-bit / Debian) and gives
# the same results as on x86: replay events, YuNet face boxes, int8 outputs of both models.
#
# Builds arm64 Debian roots with mmdebstrap, runs them under qemu-user with QEMU_CPU=cortex-a72 and a
# Raspberry Pi /proc/cpuinfo bound in, installs the project's wheel with pip --only-binary=:all: and
# compares deploy/aarch64_probe.py's output with the same probe on this x86 machine.
# Not for CI: it takes tens of minutes. Needs root (apt-get, mmdebstrap, chroot, bind mounts) and network
# access to the Debian mirror and PyPI. See deploy/README-aarch64.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
CACHE=/var/tmp/emotion-edge-aarch64
SUITES="bookworm trixie"
CPU=cortex-a72
MODE=auto
MIRROR=http://deb.debian.org/debian
DATA=$REPO/../shared/data
DEFAULT_CPU_CHECK=1
REBUILD=0
# A CA bundle for pip inside the roots, for networks that intercept TLS (the host's pip setting by default).
CA=${PIP_CERT:-${SSL_CERT_FILE:-}}

usage() {
    cat <<EOF
usage: $0 [options]
  --cache DIR          roots, pip caches and results (default $CACHE)
  --suites "S..."      Debian suites to test (default "$SUITES")
  --cpu NAME           qemu CPU model: cortex-a72 (Pi 4), cortex-a53 (Pi 3), cortex-a76 (Pi 5) (default $CPU)
  --mode MODE          binfmt (chroot + binfmt_misc), proot (no binfmt_misc needed) or auto (default)
  --data DIR           the shared data folder with emg/, faces/, models/ (default $DATA)
  --mirror URL         Debian mirror (default $MIRROR)
  --ca FILE            CA bundle pip uses in the roots (default \$PIP_CERT or \$SSL_CERT_FILE: ${CA:-none})
  --no-default-cpu     skip the extra runs without QEMU_CPU / without the Pi cpuinfo
  --rebuild            rebuild the cached roots
Exit status: 0 when every arm64 root matches x86, 1 on a mismatch, 2 on a setup error.
EOF
}

while [ $# -gt 0 ]; do
    case $1 in
        --cache) CACHE=$2; shift 2 ;;
        --suites) SUITES=$2; shift 2 ;;
        --cpu) CPU=$2; shift 2 ;;
        --mode) MODE=$2; shift 2 ;;
        --data) DATA=$2; shift 2 ;;
        --mirror) MIRROR=$2; shift 2 ;;
        --ca) CA=$2; shift 2 ;;
        --no-default-cpu) DEFAULT_CPU_CHECK=0; shift ;;
        --rebuild) REBUILD=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done

log() { printf '%s [check-aarch64] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }

[ "$(id -u)" = 0 ] || die "run as root (apt-get, mmdebstrap, chroot)"
DATA=$(cd "$DATA" && pwd) || die "no data folder $DATA"
for f in emg/emg_train.csv models/face_detection_yunet_2023mar.onnx faces; do
    [ -e "$DATA/$f" ] || die "$DATA/$f is missing"
done
RUN=$CACHE/runs/$(date +%Y%m%dT%H%M%S)
mkdir -p "$CACHE/roots" "$RUN"
T0=$SECONDS
TIMES=""
timed() { TIMES="$TIMES$(printf '%-34s %5ss' "$1" $((SECONDS - $2)))"$'\n'; }

# 1. Host tools.
need=""
for pair in mmdebstrap:mmdebstrap qemu-aarch64-static:qemu-user-static update-binfmts:binfmt-support \
    arch-test:arch-test proot:proot python3:python3-venv; do
    command -v "${pair%%:*}" >/dev/null || need="$need ${pair#*:}"
done
python3 -c 'import venv, ensurepip' 2>/dev/null || need="$need python3-venv"
if [ -n "$need" ]; then
    log "installing host packages:$need"
    # shellcheck disable=SC2086  # a word list
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need >"$RUN/apt-host.log" 2>&1 ||
        { apt-get update -q >>"$RUN/apt-host.log" 2>&1 &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need >>"$RUN/apt-host.log" 2>&1; } ||
        die "apt-get install failed, see $RUN/apt-host.log"
fi

# 2. Emulation: binfmt_misc (the kernel runs arm64 binaries through qemu, so chroot and mmdebstrap work
# as on a real machine) when this kernel allows it; else proot, which starts every arm64 process through
# qemu-aarch64-static itself (containers without binfmt_misc).
binfmt_ok() {
    [ -e /proc/sys/fs/binfmt_misc/register ] ||
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || return 1
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
    # F (fix binary): the kernel holds the qemu binary open, so it works inside a chroot without a copy.
    grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null && arch-test arm64 >/dev/null 2>&1
}
case $MODE in
    auto) if binfmt_ok; then MODE=binfmt; else MODE=proot; fi ;;
    binfmt) binfmt_ok || die "binfmt_misc cannot run arm64 binaries here: use --mode proot" ;;
    proot) ;;
    *) die "unknown --mode $MODE" ;;
esac
log "emulation: $MODE, $(qemu-aarch64-static --version | head -1)"

# A Raspberry Pi /proc/cpuinfo (Raspberry Pi OS 64-bit) for the emulated CPU: the CPU detection in
# LiteRT's XNNPACK (pytorch/cpuinfo) parses it, and qemu-user shows the host's x86 file otherwise.
case $CPU in
    cortex-a53) part=0xd03 rev=4 feat="fp asimd evtstrm crc32 cpuid" model="Raspberry Pi 3 Model B Rev 1.2" revcode=a02082 ;;
    cortex-a72) part=0xd08 rev=3 feat="fp asimd evtstrm crc32 cpuid" model="Raspberry Pi 4 Model B Rev 1.4" revcode=c03114 ;;
    cortex-a76) part=0xd0b rev=1 feat="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
        model="Raspberry Pi 5 Model B Rev 1.0" revcode=d04170 ;;
    *) die "--cpu must be cortex-a53, cortex-a72 or cortex-a76" ;;
esac
CPUINFO=$CACHE/cpuinfo-$CPU
{
    for n in 0 1 2 3; do
        printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\n' "$n" "$feat"
        printf 'CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: %s\nCPU revision\t: %s\n\n' "$part" "$rev"
    done
    printf 'Hardware\t: BCM2835\nRevision\t: %s\nSerial\t\t: 1000000000000000\nModel\t\t: %s\n' "$revcode" "$model"
} >"$CPUINFO"

# run_in_root ROOT QEMU_CPU(or "") CPUINFO(or "") CMD...: CMD in the arm64 root, host network, data at
# /mnt/ee-data (read-only), with a clean environment.
run_in_root() {
    local root=$1 cpu=$2 ci=$3
    shift 3
    local envv=(env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/root LANG=C.UTF-8 TMPDIR=/tmp)
    [ -z "$cpu" ] || envv+=("QEMU_CPU=$cpu")
    if [ "$MODE" = binfmt ]; then
        # A private mount namespace: the binds vanish with the command, nothing leaks onto the host.
        # shellcheck disable=SC2016  # expanded by the inner bash
        unshare --mount --propagation private -- bash -euc '
            r=$1 ci=$2 data=$3; shift 3
            mount -t proc proc "$r/proc"
            mount --rbind /dev "$r/dev"
            mount --rbind /sys "$r/sys"
            mkdir -p "$r/mnt/ee-data"
            mount --bind "$data" "$r/mnt/ee-data"
            mount -o remount,bind,ro "$r/mnt/ee-data"
            [ -z "$ci" ] || mount --bind "$ci" "$r/proc/cpuinfo"
            exec chroot "$r" "$@"' _ "$root" "$ci" "$DATA" "${envv[@]}" "$@"
    else
        local binds=(-b /dev -b /proc -b /sys -b "$DATA:/mnt/ee-data")
        [ -z "$ci" ] || binds+=(-b "$ci:/proc/cpuinfo")
        "${envv[@]}" PROOT_NO_SECCOMP=1 proot -0 -q qemu-aarch64-static -r "$root" "${binds[@]}" -w / "$@"
    fi
}

# 3. The wheel, built from a copy of the working tree's sources (tracked and untracked, not ignored), so
# the checkout gets no build/ or egg-info.
t=$SECONDS
mkdir -p "$RUN/src" "$RUN/dist"
(cd "$REPO" && git ls-files -z -co --exclude-standard -- pyproject.toml README.md 'LICENSE*' edge models |
    tar --null --ignore-failed-read -T - -cf -) | tar -xf - -C "$RUN/src"
BUILD_PY=$REPO/.venv/bin/python
if ! "$BUILD_PY" -m build --version >/dev/null 2>&1; then
    python3 -m venv "$CACHE/build-venv" && "$CACHE/build-venv/bin/pip" install -q build >"$RUN/build.log" 2>&1
    BUILD_PY=$CACHE/build-venv/bin/python
fi
"$BUILD_PY" -m build --wheel --outdir "$RUN/dist" "$RUN/src" >>"$RUN/build.log" 2>&1 || die "wheel build failed, see $RUN/build.log"
WHEEL=$(ls "$RUN"/dist/emotion_edge-*.whl)
WHEEL_NAME=$(basename "$WHEEL")
SOURCE="$(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD -- edge models pyproject.toml || echo +changes)"
log "built $WHEEL_NAME from $REPO at $SOURCE"
timed "wheel build" "$t"

# 4. x86 reference: a fresh venv with the same wheel, binary wheels only.
t=$SECONDS
rm -rf "$CACHE/host-venv"
python3 -m venv "$CACHE/host-venv"
PIP_CACHE_DIR=$CACHE/pip-host "$CACHE/host-venv/bin/pip" install -q --only-binary=:all: "$WHEEL" \
    >"$RUN/pip-x86_64.log" 2>&1 || die "pip install on x86 failed, see $RUN/pip-x86_64.log"
(cd "$RUN" && "$CACHE/host-venv/bin/python" "$HERE/aarch64_probe.py" probe "$DATA" >"$RUN/x86_64.json")
timed "x86_64 venv + probe" "$t"

# 5. One arm64 root per suite.
build_root() {
    local suite=$1 root=$CACHE/roots/$1
    if [ -f "$root/.ee-root-ok" ] && [ "$REBUILD" = 0 ]; then return 0; fi
    rm -rf "$root"
    local pkgs=python3,python3-venv,ca-certificates,mosquitto
    if [ "$MODE" = binfmt ]; then
        mmdebstrap --arch=arm64 --variant=apt --include=$pkgs "$suite" "$root" "$MIRROR"
    else
        # Without binfmt_misc no maintainer script can run: extract the packages (and their dependencies)
        # and do by hand the little that python3 -m venv, pip and mosquitto need.
        mmdebstrap --arch=arm64 --variant=extract --skip=check/qemu --include=$pkgs,base-passwd,base-files,bash,coreutils,libc-bin,libstdc++6 \
            "$suite" "$root" "$MIRROR"
        cp -n "$root/usr/share/base-passwd/passwd.master" "$root/etc/passwd"
        cp -n "$root/usr/share/base-passwd/group.master" "$root/etc/group"
    fi
    touch "$root/.ee-root-ok"
}

TARGETS=()
EXPERIMENTS=()
for suite in $SUITES; do
    root=$CACHE/roots/$suite
    t=$SECONDS
    log "$suite: arm64 root in $root"
    build_root "$suite" >"$RUN/mmdebstrap-$suite.log" 2>&1 || die "mmdebstrap $suite failed, see $RUN/mmdebstrap-$suite.log"
    timed "$suite root (mmdebstrap or cache)" "$t"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    rm -rf "$root/opt/ee-check"
    mkdir -p "$root/opt/ee-check"
    cp "$WHEEL" "$HERE/aarch64_probe.py" "$root/opt/ee-check/"
    pip_cert=""
    if [ -n "$CA" ]; then cp "$CA" "$root/opt/ee-check/ca.crt" && pip_cert="--cert /opt/ee-check/ca.crt"; fi

    t=$SECONDS
    log "$suite: venv + pip install --only-binary=:all: (QEMU_CPU=$CPU)"
    if ! run_in_root "$root" "$CPU" "$CPUINFO" bash -ec "rm -rf /opt/ee-venv; python3 -m venv /opt/ee-venv
        /opt/ee-venv/bin/pip install $pip_cert --only-binary=:all: /opt/ee-check/$WHEEL_NAME" >"$RUN/pip-$suite.log" 2>&1; then
        if grep -q -E 'SSLError|NewConnectionError|ConnectTimeout' "$RUN/pip-$suite.log"; then
            log "$suite: pip install failed: no connection to PyPI (behind a TLS proxy? see --ca)"
        else
            log "$suite: pip install failed; without an aarch64 binary wheel:"
        fi
        grep -E 'No matching distribution|Could not find a version' "$RUN/pip-$suite.log" >&2 || tail -5 "$RUN/pip-$suite.log" >&2
        TARGETS+=("$RUN/$suite-pip-failed")
        continue
    fi
    # The platform wheels pip chose (everything else is py3-none-any).
    grep -oE '[A-Za-z0-9_.+-]+-[0-9][^ /]*-(cp3[0-9]+|abi3)-[^ /]*_aarch64\.whl' "$RUN/pip-$suite.log" | sort -u \
        >"$RUN/wheels-$suite.txt" || true
    timed "$suite venv + pip install" "$t"

    t=$SECONDS
    log "$suite: probe (QEMU_CPU=$CPU, Pi cpuinfo)"
    run_in_root "$root" "$CPU" "$CPUINFO" /opt/ee-venv/bin/python /opt/ee-check/aarch64_probe.py probe /mnt/ee-data \
        >"$RUN/$suite-$CPU.json" 2>"$RUN/$suite-$CPU.err" || log "$suite: probe failed, see $RUN/$suite-$CPU.err"
    TARGETS+=("$RUN/$suite-$CPU.json")
    timed "$suite probe" "$t"

    # The claim: without the CPU model or without the Pi cpuinfo, LiteRT crashes or gives wrong int8
    # results. Informational only, on the first suite; each part runs in its own process (crashes are caught).
    if [ "$DEFAULT_CPU_CHECK" = 1 ] && [ ${#EXPERIMENTS[@]} = 0 ]; then
        for variant in "default-cpu+pi-cpuinfo::$CPUINFO" "$CPU+host-cpuinfo:$CPU:" "default-cpu+host-cpuinfo::"; do
            IFS=: read -r name vcpu vci <<<"$variant"
            t=$SECONDS
            log "$suite: experiment $name"
            run_in_root "$root" "$vcpu" "$vci" /opt/ee-venv/bin/python /opt/ee-check/aarch64_probe.py probe \
                /mnt/ee-data >"$RUN/$suite-$name.json" 2>"$RUN/$suite-$name.err" || true
            EXPERIMENTS+=("$RUN/$suite-$name.json")
            timed "$suite $name" "$t"
        done
    fi
done

# 6. Compare with x86.
status=0
echo
echo "== arm64 (QEMU_CPU=$CPU, Raspberry Pi /proc/cpuinfo) vs x86_64; emulation: $MODE; wheel $WHEEL_NAME ($SOURCE)"
for target in "${TARGETS[@]}"; do
    case $target in *-pip-failed) echo "$(basename "$target"): no install, see $RUN/pip-*.log"; status=1 ;; esac
done
ok=()
for target in "${TARGETS[@]}"; do [ -s "$target" ] && ok+=("$target"); done
python3 "$HERE/aarch64_probe.py" compare "$RUN/x86_64.json" "${ok[@]}" || status=1
[ ${#ok[@]} = ${#TARGETS[@]} ] || status=1
if [ ${#EXPERIMENTS[@]} -gt 0 ]; then
    echo
    echo "== informational: without QEMU_CPU and/or without the Pi cpuinfo (a mismatch here is the expected outcome)"
    python3 "$HERE/aarch64_probe.py" compare "$RUN/x86_64.json" "${EXPERIMENTS[@]}" || true
fi
echo
for suite in $SUITES; do
    [ ! -s "$RUN/wheels-$suite.txt" ] || { echo "$suite: aarch64 wheels:"; sed 's/^/  /' "$RUN/wheels-$suite.txt"; }
done
echo
printf '%s' "$TIMES"
printf '%-34s %5ss\n' total $((SECONDS - T0))
echo "logs and JSON: $RUN"
if [ $status = 0 ]; then echo "RESULT: every arm64 root matches x86"; else echo "RESULT: MISMATCH (see above)"; fi
exit $status
