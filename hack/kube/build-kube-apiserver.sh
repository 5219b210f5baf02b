#!/usr/bin/env bash
# Build a real kube-apiserver v1.20.2 (and, optionally, kube-controller-manager v1.20.2) from
# Debian bookworm's own `kubernetes` source package with Debian's Go 1.19, and take etcd 3.4.23
# from Debian's `etcd-server` package. Needs apt access to a Debian bookworm archive and nothing
# else: no Docker, no other download. Nothing under /etc/apt or /var/lib/apt is changed: apt runs
# with a private sources list, lists dir and cache dir inside the work dir. Root is not needed.
#
# Usage: build-kube-apiserver.sh [--cache-dir DIR] [--work-dir DIR] [--controller-manager]
#                                [--prepare-only] [--clean] [--force]
#
#   --cache-dir DIR       where the finished binaries go (kube-apiserver, etcd and, with
#                         --controller-manager, kube-controller-manager) plus build-info.txt.
#                         Default: $KAPI_CACHE_DIR, else ${XDG_CACHE_HOME:-$HOME/.cache}/berth/kube-1.20.2
#   --work-dir DIR        scratch space: apt lists, .debs, Go toolchain, Kubernetes source tree
#                         and Go build cache (about 2.3 GB). Keep it and a later rebuild (for
#                         example adding --controller-manager) takes about a minute.
#                         Default: $KAPI_WORK_DIR, else ${TMPDIR:-/tmp}/kube-1.20.2-build
#   --controller-manager  also build kube-controller-manager (about one more minute)
#   --prepare-only        download, unpack, apply the two fixes, generate OpenAPI; do not compile
#   --clean               delete the work dir after a successful build
#   --force               rebuild even if the cache already holds matching binaries
#
# Environment: DEBIAN_MIRROR (default: first non-security mirror in /etc/apt sources, else
#   http://deb.debian.org/debian), KUBERNETES_DEB_VERSION (default 1.20.5+really1.20.2-1.1+deb12u1).
#
# A run whose binaries are already cached returns at once. The last line printed on stdout
# is the cache dir. Measured cold on 2 cores: about 6 minutes, 1.3 GB peak RSS.
set -euo pipefail

K8S_VERSION=1.20.2
K8S_COMMIT=faecb196815e248d3ecfb03c680a4507229c2a56      # upstream v1.20.2 tag
K8S_BUILD_DATE=2021-01-13T13:20:00Z
KUBERNETES_DEB_VERSION=${KUBERNETES_DEB_VERSION:-1.20.5+really1.20.2-1.1+deb12u1}
RECIPE=2   # bump when the recipe changes, so old caches are rebuilt

CACHE_DIR=${KAPI_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/berth/kube-$K8S_VERSION}
WORK_DIR=${KAPI_WORK_DIR:-${TMPDIR:-/tmp}/kube-$K8S_VERSION-build}
WITH_KCM=0 PREPARE_ONLY=0 CLEAN=0 FORCE=0

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case $1 in
    --cache-dir) CACHE_DIR=$2; shift 2 ;;
    --cache-dir=*) CACHE_DIR=${1#*=}; shift ;;
    --work-dir) WORK_DIR=$2; shift 2 ;;
    --work-dir=*) WORK_DIR=${1#*=}; shift ;;
    --controller-manager) WITH_KCM=1; shift ;;
    --prepare-only) PREPARE_ONLY=1; shift ;;
    --clean) CLEAN=1; shift ;;
    --force) FORCE=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 >&2 ;;
  esac
done

log() { echo "[build-kube-apiserver] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in apt-get dpkg tar gzip make flock; do
  command -v "$tool" >/dev/null || die "'$tool' is missing (Debian: apt-get install apt dpkg tar gzip make util-linux)"
done

mkdir -p "$CACHE_DIR"
CACHE_DIR=$(cd "$CACHE_DIR" && pwd)
# One build at a time per cache dir (parallel test runners may all call this script).
exec 9>"$CACHE_DIR/.lock"
flock 9

KEY="kubernetes=$KUBERNETES_DEB_VERSION recipe=$RECIPE arch=$(dpkg --print-architecture)"

# Decide what must be built. A cache whose key differs (other Debian version, older recipe)
# is rebuilt whole; otherwise only missing or broken binaries are rebuilt.
binary_ok() { [ -x "$CACHE_DIR/$1" ] && "$CACHE_DIR/$1" --version 2>/dev/null | grep -qx "Kubernetes v$K8S_VERSION"; }
TARGETS=()
if [ "$FORCE" = 1 ] || ! grep -qxF "key: $KEY" "$CACHE_DIR/build-info.txt" 2>/dev/null || [ ! -x "$CACHE_DIR/etcd" ]; then
  TARGETS=(kube-apiserver)
  [ "$WITH_KCM" = 1 ] && TARGETS+=(kube-controller-manager)
else
  binary_ok kube-apiserver || TARGETS+=(kube-apiserver)
  [ "$WITH_KCM" = 1 ] && { binary_ok kube-controller-manager || TARGETS+=(kube-controller-manager); }
fi
if [ ${#TARGETS[@]} = 0 ] && [ "$PREPARE_ONLY" = 0 ]; then
  log "cache hit: $CACHE_DIR"
  echo "$CACHE_DIR"
  exit 0
fi

START=$(date +%s)
mkdir -p "$WORK_DIR"
WORK_DIR=$(cd "$WORK_DIR" && pwd)
W=$WORK_DIR
cd "$W"
mkdir -p apt/lists/partial apt/cache/archives/partial debs go etcd reflect2

# ---- 1. Fetch with apt, using private state only -------------------------------------------
MIRROR=${DEBIAN_MIRROR:-}
if [ -z "$MIRROR" ]; then
  MIRROR=$( { awk '/^URIs:/{for(i=2;i<=NF;i++) print $i}' /etc/apt/sources.list.d/*.sources 2>/dev/null
              awk '$1=="deb"{for(i=2;i<=NF;i++) if($i ~ /^[a-z+]+:\/\//){print $i; break}}' \
                  /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null; } \
            | grep -v -- '-security' | head -n1 || true)
fi
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SIGNED_BY=
[ -r /usr/share/keyrings/debian-archive-keyring.gpg ] && SIGNED_BY="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
printf 'deb %s%s bookworm main\ndeb-src %s%s bookworm main\n' "$SIGNED_BY" "$MIRROR" "$SIGNED_BY" "$MIRROR" > apt/sources.list
# Read after the system configuration (apt-get -c): private sources, lists and cache, and no
# update hooks (images often carry hooks that clean or refresh system caches after `apt-get update`).
cat > apt/apt.conf <<EOF
#clear APT::Update::Pre-Invoke;
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
Dir::Etc::SourceList "$W/apt/sources.list";
Dir::Etc::SourceParts "/dev/null";
Dir::State::Lists "$W/apt/lists/";
Dir::Cache "$W/apt/cache/";
EOF
APT=(-c "$W/apt/apt.conf" -q)
log "apt-get update (private lists, mirror $MIRROR)"
apt-get "${APT[@]}" update >/dev/null

ORIG="kubernetes_${KUBERNETES_DEB_VERSION%-*}.orig.tar.gz"     # e.g. kubernetes_1.20.5+really1.20.2.orig.tar.gz
log "apt-get source --download-only kubernetes=$KUBERNETES_DEB_VERSION"
if ! apt-get "${APT[@]}" source --download-only "kubernetes=$KUBERNETES_DEB_VERSION" >/dev/null; then
  log "versions of the kubernetes source package in this archive:"
  apt-cache "${APT[@]}" showsrc kubernetes 2>/dev/null | grep '^Version:' >&2 || true
  die "set KUBERNETES_DEB_VERSION to one of them (its upstream part must be 1.20.2)"
fi
[ -s "$ORIG" ] || die "$ORIG missing after apt-get source"
for pkg in golang-1.19-go golang-1.19-src golang-github-modern-go-reflect2-dev etcd-server; do
  f=$(ls debs/"${pkg}"_*.deb 2>/dev/null | head -n1 || true)
  if [ -n "$f" ] && ! dpkg-deb --info "$f" >/dev/null 2>&1; then rm -f "$f"; f=; fi
  if [ -z "$f" ]; then
    log "apt-get download $pkg"
    (cd debs && apt-get "${APT[@]}" download "$pkg" >/dev/null)
  fi
done

# ---- 2. Unpack (no installation: dpkg -x only) ----------------------------------------------
if [ ! -x go/usr/lib/go-1.19/bin/go ]; then
  for f in debs/golang-1.19-go_*.deb debs/golang-1.19-src_*.deb; do dpkg -x "$f" go; done
fi
[ -x etcd/usr/bin/etcd ] || dpkg -x debs/etcd-server_*.deb etcd
[ -d reflect2/usr/share/gocode/src/github.com/modern-go/reflect2 ] || dpkg -x debs/golang-github-modern-go-reflect2-dev_*.deb reflect2

# Kubernetes 1.20 builds in GOPATH mode, so the tree must sit at $GOPATH/src/k8s.io/kubernetes.
# Always start from the pristine tarball so both fixes below apply to a known tree.
# Debian's own patches only touch kubectl output (CVE-2021-25743) and are not needed here.
SRC=$W/gopath/src/k8s.io/kubernetes
log "unpacking the Kubernetes source tree"
rm -rf "$SRC" "$W/gopath/src/k8s.io/.unpack"
mkdir -p "$W/gopath/src/k8s.io/.unpack"
tar xzf "$ORIG" -C "$W/gopath/src/k8s.io/.unpack"
mv "$W/gopath/src/k8s.io/.unpack"/kubernetes-* "$SRC"
rmdir "$W/gopath/src/k8s.io/.unpack"
cd "$SRC"

# ---- 3. Fix: swap reflect2 ------------------------------------------------------------------
# The vendored github.com/modern-go/reflect2 v1.0.1 breaks on Go >= 1.18: every LIST and every
# CRD create then panics inside json-iterator (nil pointer in reflect2.(*frozenConfig).Type2).
# Swap in Debian's reflect2 1.0.2, which is API-compatible.
rm -rf vendor/github.com/modern-go/reflect2
cp -r "$W"/reflect2/usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2
rm -f vendor/github.com/modern-go/reflect2/*_test.go

export GOROOT="$W/go/usr/lib/go-1.19" PATH="$W/go/usr/lib/go-1.19/bin:$PATH" CGO_ENABLED=0
export GOCACHE="$W/gocache" GOENV=off GOPROXY=off
unset GOFLAGS GOPATH GO111MODULE

# ---- 4. Fix: generate the OpenAPI definitions -----------------------------------------------
# Without this: cmd/kube-apiserver/app/server.go:477:87: undefined: openapi.GetOpenAPIDefinitions
# Use the top-level Makefile; Makefile.generated_files on its own writes files into /.
log "make gen_openapi (about 25 s)"
make gen_openapi >"$W/gen_openapi.log" 2>&1 || { tail -30 "$W/gen_openapi.log" >&2; die "make gen_openapi failed"; }
[ -s pkg/generated/openapi/zz_generated.openapi.go ] || die "gen_openapi produced no output"

if [ "$PREPARE_ONLY" = 1 ]; then
  log "prepared in $(( $(date +%s) - START )) s; source tree: $SRC"
  echo "$W"
  exit 0
fi

# ---- 5. Compile ------------------------------------------------------------------------------
export GOPATH="$W/gopath" GO111MODULE=off
LDF="-s -w"
for V in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
  LDF="$LDF -X $V.gitVersion=v$K8S_VERSION -X $V.gitMajor=1 -X $V.gitMinor=20 -X $V.gitTreeState=clean"
  LDF="$LDF -X $V.gitCommit=$K8S_COMMIT -X $V.buildDate=$K8S_BUILD_DATE"
done
for t in "${TARGETS[@]}"; do
  log "go build ./cmd/$t (cold: about 5.5 min for kube-apiserver, 1 min more for kube-controller-manager)"
  go build -ldflags "$LDF" -o "$CACHE_DIR/.$t.tmp" "./cmd/$t"
done

# ---- 6. Install into the cache atomically ------------------------------------------------
cp "$W/etcd/usr/bin/etcd" "$CACHE_DIR/.etcd.tmp"
for t in "${TARGETS[@]}" etcd; do mv -f "$CACHE_DIR/.$t.tmp" "$CACHE_DIR/$t"; done
{
  echo "key: $KEY"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(( $(date +%s) - START )) s"
  echo "mirror: $MIRROR"
  for f in "$W"/debs/*.deb; do echo "deb: $(basename "$f")"; done
  for t in kube-apiserver kube-controller-manager; do
    if [ -x "$CACHE_DIR/$t" ]; then echo "$t: $("$CACHE_DIR/$t" --version)"; fi
  done
  echo "etcd: $("$CACHE_DIR/etcd" --version | head -n1)"
} > "$CACHE_DIR/build-info.txt"
log "built in $(( $(date +%s) - START )) s:"
sed 's/^/  /' "$CACHE_DIR/build-info.txt" >&2

if [ "$CLEAN" = 1 ]; then
  log "removing work dir $W"
  cd /
  rm -rf "$W"
fi
echo "$CACHE_DIR"
