#!/usr/bin/env bash
# Builds a real kube-apiserver once, into a cache outside the checkout, for the e2e tier in
# tests/kube/ (admission webhooks, node label sync, eviction against a real API server).
#
# Source: Debian bookworm's `kubernetes` source package (v1.20.2), built with Debian's Go;
# etcd comes from Debian's `etcd-server`. Needs root for apt-get. First run: about 4 minutes
# on 2 cores after the package download (up to ~12 on a slow machine); later runs return
# at once. Prints one line and exits 3 when it cannot build (no root, no apt), so the
# caller can skip the tier with that reason.
set -euo pipefail
CACHE=${SOVEREIGN_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sovereign/kube}
BIN="$CACHE/bin"
WORK="$CACHE/build"
# Bumped when the recipe changes, so a binary built by an older one is rebuilt.
RECIPE=3
if [ -x "$BIN/kube-apiserver" ] && [ "$(cat "$BIN/recipe" 2>/dev/null)" = "$RECIPE" ] \
   && command -v etcd >/dev/null; then
  echo "kube-apiserver: $("$BIN/kube-apiserver" --version) (cached in $BIN)"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "kube-apiserver cannot be built here: needs root and apt-get (Debian) to install Go and etcd"
  exit 3
fi
mkdir -p "$BIN" "$WORK/lists"
export DEBIAN_FRONTEND=noninteractive
# reflect2 1.0.2 (Debian's package) replaces the vendored 1.0.1, which crashes under Go 1.18
# and newer (Debian's Go is 1.19) when the API server encodes a map: a mutating webhook's
# JSONPatch is one, so without it the first admitted pod kills the server.
PACKAGES="golang-go rsync etcd-server golang-github-modern-go-reflect2-dev"
if ! apt-get install -y -q $PACKAGES >/dev/null 2>&1; then
  apt-get update -q >/dev/null
  apt-get install -y -q $PACKAGES >/dev/null
fi
# The source package comes from the machine's own Debian mirror, through a private deb-src
# list so the system's apt configuration is left as it was.
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
echo "deb-src $mirror bookworm main" > "$WORK/sources.list"
apt_src=(-o Dir::Etc::SourceList="$WORK/sources.list" -o Dir::Etc::SourceParts=/dev/null
         -o Dir::State::Lists="$WORK/lists")
if [ ! -d "$WORK/src" ]; then
  apt-get -q "${apt_src[@]}" update >/dev/null
  (cd "$WORK" && apt-get -q "${apt_src[@]}" source --download-only kubernetes >/dev/null \
    && dpkg-source -x --no-check kubernetes_*.dsc src >/dev/null)
fi
cd "$WORK/src"
reflect2=vendor/github.com/modern-go/reflect2
cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$reflect2/"
rm -f "$reflect2/go_above_17.go" "$reflect2/go_below_17.go" "$reflect2/go_below_19.go"
# CVE-2021-25735 (kubernetes/kubernetes#100096): v1.20.2's ValidateNodeUpdate overwrites the
# stored Node with the new one before validating webhooks run, so they get oldObject equal to
# object on every Node update. Upstream's fix (#99946, v1.20.6) stops the mutation; validating
# on a copy has the same effect. Idempotent, so a rerun on the same tree does not stack it.
validation=pkg/apis/core/validation/validation.go
if ! grep -q 'oldNode = oldNode.DeepCopy()' "$validation"; then
  sed -i '/^func ValidateNodeUpdate(node, oldNode \*core.Node) field.ErrorList {$/a\	oldNode = oldNode.DeepCopy()' "$validation"
  grep -q 'oldNode = oldNode.DeepCopy()' "$validation"
fi
# An interrupted build leaves empty generated files that make the generators fail.
find . -name 'zz_generated*.go' -size 0 -delete
if ! make WHAT=cmd/kube-apiserver > "$WORK/make.log" 2>&1; then
  tail -20 "$WORK/make.log"
  echo "kube-apiserver build failed; full log in $WORK/make.log"
  exit 1
fi
cp _output/bin/kube-apiserver "$BIN/kube-apiserver.tmp"
mv "$BIN/kube-apiserver.tmp" "$BIN/kube-apiserver"
echo "$RECIPE" > "$BIN/recipe"
echo "kube-apiserver: $("$BIN/kube-apiserver" --version) (built into $BIN)"
