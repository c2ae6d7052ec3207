#!/usr/bin/env bash
# Local services for Waypoint's tests and demos: PostgreSQL 17 with pgvector,
# Redis, a nats-server binary and, on demand, Jaeger. Everything lives in a
# cache directory outside the checkout, listens on 127.0.0.1 only, and on
# ports chosen not to clash with system services.
#
# Usage: services.sh up [--with-jaeger] | down | status | env | jaeger
#
# Every command is idempotent: a service that already runs is left alone.
# "down" stops only what its pidfiles name. Run as root on Debian (it uses
# apt-get, debootstrap and chroot).
#
# Environment (defaults in brackets):
#   WAYPOINT_CACHE_DIR          [/var/cache/waypoint]
#   WAYPOINT_PG_PORT            [55432]
#   WAYPOINT_REDIS_PORT         [56379]
#   WAYPOINT_JAEGER_OTLP_PORT   [4317]  (OTLP/HTTP is the next port up)
#   WAYPOINT_JAEGER_UI_PORT     [16686] (query gRPC is the port below)
#   WAYPOINT_JAEGER_VERSION     [v1.75.0]
#   WAYPOINT_JAEGER_UI_ASSETS   a built jaeger-ui directory for the query
#                               service to serve (the Go module has none)
#   WAYPOINT_DEBIAN_MIRROR      [http://deb.debian.org/debian]
#   WAYPOINT_TEST_PG_URL        use this server (needs the vector extension)
#                               instead of a local one
#   WAYPOINT_TEST_REDIS_URL     use this Redis instead of a local one
set -euo pipefail

ME=services.sh
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${WAYPOINT_CACHE_DIR:-/var/cache/waypoint}
PG_PORT=${WAYPOINT_PG_PORT:-55432}
REDIS_PORT=${WAYPOINT_REDIS_PORT:-56379}
JAEGER_OTLP_PORT=${WAYPOINT_JAEGER_OTLP_PORT:-4317}
JAEGER_UI_PORT=${WAYPOINT_JAEGER_UI_PORT:-16686}
JAEGER_VERSION=${WAYPOINT_JAEGER_VERSION:-v1.75.0}
JAEGER_UI_ASSETS=${WAYPOINT_JAEGER_UI_ASSETS:-}
MIRROR=${WAYPOINT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
EXT_PG_URL=${WAYPOINT_TEST_PG_URL:-}
EXT_REDIS_URL=${WAYPOINT_TEST_REDIS_URL:-}

PG_ROOT=$CACHE/pg17-trixie
PG_BIN=/usr/lib/postgresql/17/bin
PG_DATA=/srv/pgdata # inside PG_ROOT
REDIS_DIR=$CACHE/redis
REDIS_PIDFILE=$REDIS_DIR/redis.pid
NATS_BIN=$CACHE/bin/nats-server
JAEGER_BIN=$CACHE/bin/jaeger
JAEGER_DIR=$CACHE/jaeger
JAEGER_PIDFILE=$JAEGER_DIR/jaeger.pid

log() { printf '%s: %s\n' "$ME" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

usage() {
	cat >&2 <<EOF
usage: $ME up [--with-jaeger] | down | status | env | jaeger
  up        start PostgreSQL and Redis, build nats-server (cached)
  down      stop what up and jaeger started
  status    one line per service
  env       print the export lines tests need: eval "\$($ME env)"
  jaeger    build (once, ~6 min) and start Jaeger
EOF
	exit 2
}

need_root() {
	[[ $EUID -eq 0 ]] || die "'$1' must run as root (it uses apt-get, debootstrap and chroot); try: sudo $0 $1"
}

check_port_var() {
	if ! [[ $2 =~ ^[0-9]{1,5}$ ]] || ((10#$2 < 1 || 10#$2 > 65535)); then
		die "$1=$2 is not a TCP port"
	fi
}

# port_open reports whether something accepts TCP connections on the port.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port seconds pid-that-must-stay-alive
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		port_open "$1" && return 0
		[[ -z ${3:-} ]] || alive "$3" || return 1
		sleep 0.1
	done
	return 1
}

# lock serialises the work on one service between concurrent runs (several
# test runs may share one cache); the lock goes with the process.
# Daemons started under a lock are given {LOCK_FD}>&- so that they do not
# inherit the descriptor and hold the lock for their whole life.
LOCK_FD=
lock() {
	exec {LOCK_FD}>"$CACHE/.$1.lock"
	flock "$LOCK_FD"
}

APT_UPDATED=
apt_install() {
	log "installing $* with apt-get"
	export DEBIAN_FRONTEND=noninteractive
	if [[ -z $APT_UPDATED ]]; then
		apt-get -q -o DPkg::Lock::Timeout=300 update >&2 || die "apt-get update failed (see above); install $* by hand"
		APT_UPDATED=1
	fi
	apt-get -q -y -o DPkg::Lock::Timeout=300 install --no-install-recommends "$@" >&2 ||
		die "apt-get install $* failed (see above); install it by hand"
}

# need makes sure command $1 exists, installing Debian package $2 if not.
need() {
	command -v "$1" >/dev/null 2>&1 && return 0
	apt_install "$2"
	command -v "$1" >/dev/null 2>&1 || die "package $2 installed but $1 is still not on PATH"
}

need_go() {
	command -v go >/dev/null 2>&1 || die "go is not on PATH; install Go first"
}

# module_version prints the version of module $2 that binary $1 was built
# from ("mod" for a go install build, "dep" for a build inside a module).
module_version() {
	[[ -x $1 ]] || return 1
	go version -m "$1" 2>/dev/null | awk -v m="$2" '($1 == "mod" || $1 == "dep") && $2 == m { print $3; exit }'
}

# alive reports whether a process exists and is not a zombie (this
# machine's init may be slow to reap orphans, or never reap them).
alive() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ ${stat%% *} != [ZX] ]]
}

pid_is() { # pidfile comm → prints the pid if it is alive and named comm
	local pid
	pid=$(head -n1 "$1" 2>/dev/null) || return 1
	[[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
	[[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] || return 1
	echo "$pid"
}

wait_gone() { # pid seconds
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		alive "$1" || return 0
		sleep 0.1
	done
	return 1
}

stop_pid() { # name pid
	kill -TERM "$2" 2>/dev/null || true
	if ! wait_gone "$2" 30; then
		log "$1 (pid $2) ignored SIGTERM for 30 s; sending SIGKILL"
		kill -KILL "$2" 2>/dev/null || true
		wait_gone "$2" 10 || die "$1 (pid $2) does not exit"
	fi
}

shell_quote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

redact() { sed -E 's#(://[^:/@]*:)[^@]*@#\1***@#' <<<"$1"; }

# ---------------------------------------------------------------- PostgreSQL

# pg_pid prints the PID of the postmaster serving PG_ROOT's data directory,
# if one runs: the PID in postmaster.pid must be a live postgres process
# chrooted into PG_ROOT, so a stale file whose PID was reused is not taken
# for a server.
pg_pid() {
	local f=$PG_ROOT$PG_DATA/postmaster.pid pid root
	[[ -f $f ]] || return 1
	pid=$(pid_is "$f" postgres) || return 1
	root=$(readlink "/proc/$pid/root" 2>/dev/null) || return 1
	[[ $root == "$(realpath "$PG_ROOT")" ]] || return 1
	echo "$pid"
}

pg_running_port() { sed -n 4p "$PG_ROOT$PG_DATA/postmaster.pid"; }

as_postgres() { chroot "$PG_ROOT" su postgres -s /bin/sh -c "$1"; }

# pg_sql runs SQL from stdin in database $1 through the chroot's psql over
# the Unix socket (local connections are trusted).
pg_sql() {
	chroot "$PG_ROOT" "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 \
		-h /tmp -p "$PG_PORT" -U waypoint -d "$1"
}

pg_root_ok() {
	[[ -x $PG_ROOT$PG_BIN/postgres && -f $PG_ROOT/usr/share/postgresql/17/extension/vector.control ]]
}

# pg_build_root bootstraps a Debian trixie tree holding PostgreSQL 17 and
# pgvector (bookworm has neither at that version). It is built under a
# temporary name and renamed only when complete, so an interrupted run is
# simply redone.
pg_build_root() {
	pg_root_ok && return 0
	[[ ! -e $PG_ROOT ]] || die "$PG_ROOT exists but holds no PostgreSQL 17 with pgvector; remove it and run again"
	need debootstrap debootstrap
	local tmp=$PG_ROOT.tmp m start=$SECONDS
	# An interrupted debootstrap can leave /proc or /sys mounted inside.
	if [[ -d $tmp ]]; then
		while read -r m; do
			[[ $m == "$tmp"/* ]] && umount -l "$m"
		done < <(findmnt -rn -o TARGET | sort -r)
		rm -rf "$tmp"
	fi
	log "building PostgreSQL 17 + pgvector root in $PG_ROOT (debootstrap trixie, about a minute; log $CACHE/debootstrap.log)"
	if ! debootstrap --variant=minbase --include=postgresql-17,postgresql-17-pgvector \
		trixie "$tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 {LOCK_FD}>&-; then
		tail -n 20 "$CACHE/debootstrap.log" >&2
		die "debootstrap of trixie from $MIRROR failed (log: $CACHE/debootstrap.log); run again to retry"
	fi
	kill_root_procs "$tmp"
	rm -f "$tmp"/var/cache/apt/archives/*.deb
	PG_ROOT=$tmp pg_root_ok || die "debootstrap finished but $tmp has no PostgreSQL 17 with pgvector"
	mv "$tmp" "$PG_ROOT"
	log "root built in $((SECONDS - start)) s"
}

# kill_root_procs stops anything a package script started inside a freshly
# bootstrapped root: those processes are this script's own.
kill_root_procs() {
	local p root want
	want=$(realpath "$1")
	for p in /proc/[0-9]*; do
		root=$(readlink "$p/root" 2>/dev/null) || continue
		if [[ $root == "$want" ]]; then
			log "stopping pid ${p#/proc/} ($(cat "$p/comm" 2>/dev/null)) left running by debootstrap"
			stop_pid "bootstrap process" "${p#/proc/}"
		fi
	done
}

pg_init_data() {
	[[ -f $PG_ROOT$PG_DATA/PG_VERSION ]] && return 0
	local tmp=$PG_DATA.tmp pw=/tmp/waypoint-pw.$$
	log "initialising data directory $PG_ROOT$PG_DATA"
	rm -rf "$PG_ROOT$tmp"
	chroot "$PG_ROOT" install -d -o postgres -g postgres -m 700 "$tmp"
	printf 'waypoint\n' >"$PG_ROOT$pw"
	chroot "$PG_ROOT" chown postgres "$pw"
	if ! as_postgres "$PG_BIN/initdb -D $tmp -U waypoint --pwfile=$pw -A scram-sha-256 --auth-local=trust -E UTF8 --locale=C.UTF-8" >"$CACHE/initdb.log" 2>&1; then
		rm -f "$PG_ROOT$pw"
		cat "$CACHE/initdb.log" >&2
		die "initdb failed (log: $CACHE/initdb.log)"
	fi
	rm -f "$PG_ROOT$pw"
	# A data directory without PG_VERSION is the leftover of an older,
	# interrupted layout: nothing in it is usable.
	rm -rf "${PG_ROOT:?}$PG_DATA"
	mv "$PG_ROOT$tmp" "$PG_ROOT$PG_DATA"
}

pg_external_check() {
	need psql postgresql-client
	local n
	n=$(PGCONNECT_TIMEOUT=5 psql "$EXT_PG_URL" -X -A -t -q -v ON_ERROR_STOP=1 \
		-c "SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'" 2>&1) ||
		die "WAYPOINT_TEST_PG_URL=$(redact "$EXT_PG_URL") does not answer: $n (unset it to use a local server)"
	[[ $n == 1 ]] || die "the server at WAYPOINT_TEST_PG_URL=$(redact "$EXT_PG_URL") has no vector extension (unset it to use a local server)"
}

pg_up() {
	if [[ -n $EXT_PG_URL ]]; then
		pg_external_check
		log "postgres: using WAYPOINT_TEST_PG_URL=$(redact "$EXT_PG_URL")"
		return 0
	fi
	lock postgres
	local pid port
	if pid=$(pg_pid); then
		port=$(pg_running_port)
		[[ $port == "$PG_PORT" ]] ||
			die "postgres in $PG_ROOT already runs (pid $pid) on port $port, not $PG_PORT; use WAYPOINT_PG_PORT=$port or run '$ME down' first"
		log "postgres: already running (pid $pid, 127.0.0.1:$PG_PORT)"
	else
		port_open "$PG_PORT" && die "port $PG_PORT is taken by another program; set WAYPOINT_PG_PORT to a free port"
		pg_build_root
		pg_init_data
		# No server of ours runs, so lock files are stale; their PIDs may
		# have been reused, which would make postgres refuse to start.
		if pid=$(pid_is "$PG_ROOT$PG_DATA/postmaster.pid" postgres); then
			die "postgres pid $pid holds $PG_ROOT$PG_DATA but is not chrooted to $PG_ROOT; stop it first"
		fi
		rm -f "$PG_ROOT$PG_DATA/postmaster.pid" "$PG_ROOT/tmp/.s.PGSQL.$PG_PORT" "$PG_ROOT/tmp/.s.PGSQL.$PG_PORT.lock"
		log "postgres: starting on 127.0.0.1:$PG_PORT"
		as_postgres "$PG_BIN/pg_ctl -D $PG_DATA -l $PG_DATA/server.log -w -t 60 -o '-p $PG_PORT -k /tmp -c listen_addresses=127.0.0.1 -c dynamic_shared_memory_type=mmap -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300' start" >&2 {LOCK_FD}>&- || {
			tail -n 20 "$PG_ROOT$PG_DATA/server.log" >&2 || true
			die "postgres did not start (log: $PG_ROOT$PG_DATA/server.log)"
		}
	fi
	pg_sql postgres <<<"SELECT 'CREATE DATABASE waypoint' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'waypoint') \gexec" ||
		die "creating database waypoint failed"
	pg_sql waypoint <<<"SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS vector" ||
		die "CREATE EXTENSION vector failed in database waypoint"
}

pg_down() {
	[[ -n $EXT_PG_URL ]] && return 0
	[[ -d $PG_ROOT ]] || return 0
	lock postgres
	local pid
	pid=$(pg_pid) || {
		log "postgres: not running"
		return 0
	}
	log "postgres: stopping (pid $pid)"
	as_postgres "$PG_BIN/pg_ctl -D $PG_DATA -m fast -w -t 60 stop" >&2 ||
		die "pg_ctl stop failed (log: $PG_ROOT$PG_DATA/server.log)"
	wait_gone "$pid" 10 || die "postgres (pid $pid) still runs after pg_ctl stop"
}

pg_status() {
	local pid
	if [[ -n $EXT_PG_URL ]]; then
		echo "postgres  external  $(redact "$EXT_PG_URL")"
	elif [[ $EUID -ne 0 ]]; then
		echo "postgres  unknown   (only root can see into $PG_ROOT$PG_DATA)"
	elif pid=$(pg_pid); then
		echo "postgres  running   pid $pid  127.0.0.1:$(pg_running_port)  root $PG_ROOT"
	elif pg_root_ok; then
		echo "postgres  stopped   root $PG_ROOT"
	else
		echo "postgres  stopped   not built ($PG_ROOT)"
	fi
}

# --------------------------------------------------------------------- Redis

redis_pid() { pid_is "$REDIS_PIDFILE" redis-server; }

redis_ping() { [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

redis_up() {
	if [[ -n $EXT_REDIS_URL ]]; then
		need redis-cli redis-tools
		[[ $(redis-cli -u "$EXT_REDIS_URL" ping 2>&1) == PONG ]] ||
			die "WAYPOINT_TEST_REDIS_URL=$(redact "$EXT_REDIS_URL") does not answer PING (unset it to use a local server)"
		log "redis: using WAYPOINT_TEST_REDIS_URL=$(redact "$EXT_REDIS_URL")"
		return 0
	fi
	need redis-server redis-server
	need redis-cli redis-tools
	mkdir -p "$REDIS_DIR"
	lock redis
	local pid i
	if pid=$(redis_pid); then
		redis_ping || die "redis (pid $pid from $REDIS_PIDFILE) does not answer on port $REDIS_PORT; use the port it runs on or run '$ME down' first"
		log "redis: already running (pid $pid, 127.0.0.1:$REDIS_PORT)"
		return 0
	fi
	port_open "$REDIS_PORT" && die "port $REDIS_PORT is taken by another program; set WAYPOINT_REDIS_PORT to a free port"
	log "redis: starting on 127.0.0.1:$REDIS_PORT"
	# Append-only persistence: tests restart Redis and expect their data back.
	redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --appendonly yes \
		--dir "$REDIS_DIR" --daemonize yes --pidfile "$REDIS_PIDFILE" \
		--logfile "$REDIS_DIR/redis.log" >&2 {LOCK_FD}>&- || die "redis-server did not start (log: $REDIS_DIR/redis.log)"
	for ((i = 0; i < 100; i++)); do
		redis_ping && return 0
		sleep 0.1
	done
	tail -n 20 "$REDIS_DIR/redis.log" >&2 || true
	die "redis does not answer on 127.0.0.1:$REDIS_PORT (log: $REDIS_DIR/redis.log)"
}

redis_down() {
	[[ -n $EXT_REDIS_URL ]] && return 0
	[[ -d $REDIS_DIR ]] || return 0
	lock redis
	local pid
	pid=$(redis_pid) || {
		log "redis: not running"
		return 0
	}
	log "redis: stopping (pid $pid)"
	stop_pid redis "$pid"
	rm -f "$REDIS_PIDFILE"
}

redis_status() {
	local pid
	if [[ -n $EXT_REDIS_URL ]]; then
		echo "redis     external  $(redact "$EXT_REDIS_URL")"
	elif pid=$(redis_pid); then
		echo "redis     running   pid $pid  127.0.0.1:$REDIS_PORT  dir $REDIS_DIR"
	else
		echo "redis     stopped"
	fi
}

# ---------------------------------------------------------------------- NATS

nats_version() {
	(cd "$ROOT" && go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2) ||
		die "cannot read the nats-server version from $ROOT/go.mod"
}

# nats_build installs the nats-server release go.mod names; tests start their
# own servers from it, so nothing runs here.
nats_build() {
	need_go
	local want have tmp start=$SECONDS
	want=$(nats_version)
	mkdir -p "$CACHE/bin"
	lock nats
	have=$(module_version "$NATS_BIN" github.com/nats-io/nats-server/v2) || true
	if [[ $have == "$want" ]]; then
		log "nats-server: $want built ($NATS_BIN)"
		return 0
	fi
	log "nats-server: building $want into $NATS_BIN"
	tmp=$(mktemp -d "$CACHE/bin/.nats.XXXXXX")
	if ! (cd "$tmp" && GOBIN=$tmp GOWORK=off go install "github.com/nats-io/nats-server/v2@$want") >&2; then
		rm -rf "$tmp"
		die "go install nats-server@$want failed (see above)"
	fi
	mv -f "$tmp/nats-server" "$NATS_BIN"
	rm -rf "$tmp"
	log "nats-server: built in $((SECONDS - start)) s"
}

nats_status() {
	local v
	if [[ -x $NATS_BIN ]]; then
		v=$(module_version "$NATS_BIN" github.com/nats-io/nats-server/v2 2>/dev/null) || v=unknown
		echo "nats      built     ${v:-unknown}  $NATS_BIN (tests start their own servers)"
	else
		echo "nats      missing   $NATS_BIN"
	fi
}

# -------------------------------------------------------------------- Jaeger

jaeger_pid() { pid_is "$JAEGER_PIDFILE" jaeger; }

# jaeger_build builds Jaeger v2 in a throwaway module of its own: it cannot be
# go-installed, and its dependencies must stay out of the project's go.mod.
jaeger_build() {
	need_go
	# One build module per version: go get never downgrades what an earlier
	# version's build required, and a newer collector than the one Jaeger
	# was released with builds but does not start.
	local dir=$CACHE/jaeger-build/$JAEGER_VERSION have start=$SECONDS
	mkdir -p "$dir" "$CACHE/bin"
	lock jaeger-build
	have=$(module_version "$JAEGER_BIN" github.com/jaegertracing/jaeger) || true
	if [[ $have == "$JAEGER_VERSION" ]]; then
		log "jaeger: $JAEGER_VERSION built ($JAEGER_BIN)"
		return 0
	fi
	log "jaeger: building $JAEGER_VERSION into $JAEGER_BIN (about 6 minutes on a cold cache; log $dir/build.log)"
	(
		set -x
		cd "$dir"
		export GOWORK=off
		[[ -f go.mod ]] || go mod init waypoint.local/jaeger-build
		go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION"
		go build -o "$JAEGER_BIN.tmp" github.com/jaegertracing/jaeger/cmd/jaeger
	) >"$dir/build.log" 2>&1 || {
		rm -f "$JAEGER_BIN.tmp"
		tail -n 20 "$dir/build.log" >&2
		die "building jaeger $JAEGER_VERSION failed (log: $dir/build.log)"
	}
	mv -f "$JAEGER_BIN.tmp" "$JAEGER_BIN"
	log "jaeger: built in $((SECONDS - start)) s"
}

jaeger_up() {
	need_root jaeger
	check_port_var WAYPOINT_JAEGER_OTLP_PORT "$JAEGER_OTLP_PORT"
	check_port_var WAYPOINT_JAEGER_UI_PORT "$JAEGER_UI_PORT"
	# In a subshell, so the build lock is released before the daemon starts
	# and is not inherited by it.
	(jaeger_build)
	mkdir -p "$JAEGER_DIR"
	lock jaeger
	local pid p
	if pid=$(jaeger_pid); then
		log "jaeger: already running (pid $pid, OTLP 127.0.0.1:$JAEGER_OTLP_PORT, UI http://127.0.0.1:$JAEGER_UI_PORT)"
		return 0
	fi
	for p in "$JAEGER_OTLP_PORT" "$((JAEGER_OTLP_PORT + 1))" "$JAEGER_UI_PORT" "$((JAEGER_UI_PORT - 1))"; do
		port_open "$p" && die "port $p is taken by another program; set WAYPOINT_JAEGER_OTLP_PORT / WAYPOINT_JAEGER_UI_PORT"
	done
	log "jaeger: starting (OTLP 127.0.0.1:$JAEGER_OTLP_PORT, UI http://127.0.0.1:$JAEGER_UI_PORT, log $JAEGER_DIR/jaeger.log)"
	rm -f "$JAEGER_PIDFILE"
	local ui=()
	if [[ -n $JAEGER_UI_ASSETS ]]; then
		[[ -f $JAEGER_UI_ASSETS/index.html ]] || die "WAYPOINT_JAEGER_UI_ASSETS=$JAEGER_UI_ASSETS has no index.html"
		ui=("--set=extensions.jaeger_query.ui.assets_path=$JAEGER_UI_ASSETS")
	fi
	# The built-in all-in-one configuration (memory storage), held to the
	# loopback interface and cut down to OTLP in and the query service out,
	# so that no fixed side port (sampling, health, zipkin, metrics) can
	# clash with another instance. The wrapper writes the PID of the process that
	# becomes jaeger, whatever setsid does about forking.
	# shellcheck disable=SC2016 # $$ and $0 belong to the inner shell
	JAEGER_LISTEN_HOST=127.0.0.1 setsid bash -c 'echo $$ >"$0"; exec "$@"' "$JAEGER_PIDFILE" \
		"$JAEGER_BIN" \
		"--set=receivers.otlp.protocols.grpc.endpoint=127.0.0.1:$JAEGER_OTLP_PORT" \
		"--set=receivers.otlp.protocols.http.endpoint=127.0.0.1:$((JAEGER_OTLP_PORT + 1))" \
		"--set=extensions.jaeger_query.http.endpoint=127.0.0.1:$JAEGER_UI_PORT" \
		"--set=extensions.jaeger_query.grpc.endpoint=127.0.0.1:$((JAEGER_UI_PORT - 1))" \
		'--set=service.pipelines.traces.receivers=[otlp]' \
		'--set=service.extensions=[jaeger_storage,jaeger_query]' \
		'--set=service.telemetry.metrics.level=none' \
		"${ui[@]}" \
		</dev/null >>"$JAEGER_DIR/jaeger.log" 2>&1 {LOCK_FD}>&- &
	local i
	for ((i = 0; i < 50; i++)); do
		[[ -s $JAEGER_PIDFILE ]] && break
		sleep 0.1
	done
	pid=$(head -n1 "$JAEGER_PIDFILE" 2>/dev/null) || die "jaeger did not start (log: $JAEGER_DIR/jaeger.log)"
	if ! wait_port "$JAEGER_UI_PORT" 60 "$pid" || ! wait_port "$JAEGER_OTLP_PORT" 10 "$pid"; then
		tail -n 20 "$JAEGER_DIR/jaeger.log" >&2 || true
		alive "$pid" && stop_pid jaeger "$pid"
		rm -f "$JAEGER_PIDFILE"
		die "jaeger did not come up (log: $JAEGER_DIR/jaeger.log)"
	fi
}

jaeger_down() {
	[[ -d $JAEGER_DIR ]] || return 0
	lock jaeger
	local pid
	pid=$(jaeger_pid) || {
		rm -f "$JAEGER_PIDFILE"
		return 0
	}
	log "jaeger: stopping (pid $pid)"
	stop_pid jaeger "$pid"
	rm -f "$JAEGER_PIDFILE"
}

jaeger_status() {
	local pid v
	if pid=$(jaeger_pid); then
		echo "jaeger    running   pid $pid  OTLP 127.0.0.1:$JAEGER_OTLP_PORT  UI http://127.0.0.1:$JAEGER_UI_PORT"
	elif [[ -x $JAEGER_BIN ]]; then
		v=$(module_version "$JAEGER_BIN" github.com/jaegertracing/jaeger 2>/dev/null) || v=unknown
		echo "jaeger    stopped   built ${v:-unknown} ($JAEGER_BIN); start: $ME jaeger"
	else
		echo "jaeger    stopped   not built; start: $ME jaeger"
	fi
}

# ------------------------------------------------------------------ commands

cmd_up() {
	local with_jaeger=0 start=$SECONDS
	for a in "$@"; do
		case $a in
		--with-jaeger) with_jaeger=1 ;;
		*) usage ;;
		esac
	done
	need_root up
	check_port_var WAYPOINT_PG_PORT "$PG_PORT"
	check_port_var WAYPOINT_REDIS_PORT "$REDIS_PORT"
	mkdir -p "$CACHE"
	# Each service takes its lock in a subshell so it is released as soon
	# as that service is done.
	(pg_up)
	(redis_up)
	(nats_build)
	if ((with_jaeger)); then (jaeger_up); fi
	log "up in $((SECONDS - start)) s"
	cmd_status >&2
}

cmd_down() {
	[[ $# -eq 0 ]] || usage
	need_root down
	[[ -d $CACHE ]] || return 0
	(jaeger_down)
	(redis_down)
	(pg_down)
}

cmd_status() {
	pg_status
	redis_status
	nats_status
	jaeger_status
}

cmd_env() {
	local pg redis
	pg=${EXT_PG_URL:-postgres://waypoint:waypoint@127.0.0.1:$PG_PORT/waypoint?sslmode=disable}
	redis=${EXT_REDIS_URL:-redis://127.0.0.1:$REDIS_PORT/0}
	echo "export WAYPOINT_DATABASE__URL=$(shell_quote "$pg")"
	echo "export WAYPOINT_REDIS__URL=$(shell_quote "$redis")"
	echo "export WAYPOINT_TEST_NATS_SERVER=$(shell_quote "$NATS_BIN")"
	if jaeger_pid >/dev/null; then
		echo "export WAYPOINT_TEST_JAEGER_OTLP=$(shell_quote "127.0.0.1:$JAEGER_OTLP_PORT")"
		echo "export WAYPOINT_TEST_JAEGER_QUERY=$(shell_quote "http://127.0.0.1:$JAEGER_UI_PORT")"
	fi
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case $cmd in
up) cmd_up "$@" ;;
down) cmd_down "$@" ;;
status)
	[[ $# -eq 0 ]] || usage
	cmd_status
	;;
env)
	[[ $# -eq 0 ]] || usage
	cmd_env
	;;
jaeger)
	[[ $# -eq 0 ]] || usage
	mkdir -p "$CACHE"
	(jaeger_up)
	jaeger_status >&2
	;;
*) usage ;;
esac
