#!/usr/bin/env bash
# Local services for botmeter's integration tests: ClickHouse and a Kafka-compatible broker (tansu).
#
#   scripts/services.sh [up]    start whatever is not already reachable, wait until it answers
#   scripts/services.sh down    stop what this script started (by pid file)
#   scripts/services.sh status  say what is reachable; exit 1 if anything is not
#   scripts/services.sh env     print `export` lines for the tests: eval "$(scripts/services.sh env)"
#   scripts/services.sh cluster up|down|status|env
#                               the same for the local ClickHouse cluster (ZooKeeper and 2 shards x 2
#                               replicas; see "the local cluster" below); not part of `up`
#
# up, down and status take optional service names (clickhouse, kafka); the default is both.
#
# Everything the services write lives under the repository's git-ignored `.services/`. Addresses are
# loopback only and come from BOTMETER_CLICKHOUSE_HTTP_PORT (8123), BOTMETER_CLICKHOUSE_TCP_PORT (9000)
# and BOTMETER_KAFKA_PORT (9092). Runs unattended (CI runs it as root on a fresh Debian 12): it installs
# ClickHouse with apt-get and builds tansu with cargo when they are missing.
set -euo pipefail

readonly HOST=127.0.0.1
readonly CH_HTTP_PORT=${BOTMETER_CLICKHOUSE_HTTP_PORT:-8123}
readonly CH_TCP_PORT=${BOTMETER_CLICKHOUSE_TCP_PORT:-9000}
readonly KAFKA_PORT=${BOTMETER_KAFKA_PORT:-9092}
readonly TIMEOUT_S=${BOTMETER_SERVICES_TIMEOUT_S:-60}
# The read-only ClickHouse user `botmeter serve` connects as (readonly = 1, no password, loopback
# only), and the server-side limit of its queries: `readonly = 1` may not change settings per query,
# so max_execution_time sits in its profile (seconds; the API's default query deadline is 10 s).
readonly CH_READER=botmeter_reader
readonly CH_READER_MAX_EXECUTION_S=10

# tansu's default build has no storage engine: `memory://` fails with FeatureNotEnabled and other
# URLs give a "null" broker that drops what it is sent. In-memory storage needs `dynostore`.
readonly TANSU_VERSION=0.6.0
readonly TANSU_FEATURES=dynostore

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly ROOT
readonly SVC_DIR=$ROOT/.services
readonly CH_DIR=$SVC_DIR/clickhouse
readonly CH_PID=$CH_DIR/clickhouse-server.pid
readonly CH_LOG=$CH_DIR/log/clickhouse-server.log
readonly CH_ERR_LOG=$CH_DIR/log/clickhouse-server.err.log
readonly TANSU_PID=$SVC_DIR/tansu.pid
readonly TANSU_LOG=$SVC_DIR/tansu.log

log() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

for port in "$CH_HTTP_PORT" "$CH_TCP_PORT" "$KAFKA_PORT" "$TIMEOUT_S"; do
    [[ $port =~ ^[0-9]+$ ]] || die "expected a number, found \"$port\" (check the BOTMETER_* variables)"
done

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "need root to run: $*"
    fi
}

apt_install() {
    log "installing $* with apt-get"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

# The pid in a pid file, if that process is still alive.
live_pid() {
    local file=$1 pid
    [[ -s $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    printf '%s\n' "$pid"
}

# Stops the process in a pid file (if its command line still mentions `program`): TERM, up to 30s,
# then KILL.
stop_pidfile() {
    local name=$1 file=$2 program=$3 pid
    if ! pid=$(live_pid "$file"); then
        log "$name: not running (no live pid in ${file#"$ROOT"/})"
        rm -f "$file"
        return 0
    fi
    if ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$program"; then
        log "$name: pid $pid is not $program any more, leaving it alone"
        rm -f "$file"
        return 0
    fi
    log "$name: stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 60); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$file"; return 0; }
        sleep 0.5
    done
    log "$name: pid $pid still running after 30s, killing it"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$file"
}

# Calls a readiness check every half second until it succeeds, the service's pid file shows it has
# exited, or TIMEOUT_S passes. A check that returns 2 has found something wrong that waiting will
# not fix.
wait_until() {
    local name=$1 check=$2 pidfile=$3 logfile=$4 started=$SECONDS rc
    while :; do
        rc=0
        "$check" || rc=$?
        ((rc != 0)) || return 0
        ((rc != 2)) || die "$name: not usable, see the message above"
        # ClickHouse writes its pid file a moment after --daemon returns, so allow it 5s.
        if ! live_pid "$pidfile" >/dev/null && ((SECONDS - started >= 5)); then
            log "$name: exited; last lines of $logfile:"
            tail -n 20 "$logfile" >&2 2>/dev/null || true
            die "$name did not start, see $logfile"
        fi
        if ((SECONDS - started >= TIMEOUT_S)); then
            log "$name: not reachable after ${TIMEOUT_S}s; last lines of $logfile:"
            tail -n 20 "$logfile" >&2 2>/dev/null || true
            die "$name did not start, see $logfile"
        fi
        sleep 0.5
    done
}

# --- ClickHouse --------------------------------------------------------------------------------

clickhouse_reachable() {
    [[ $(curl -s --max-time 2 "http://$HOST:$CH_HTTP_PORT/ping" 2>/dev/null) == Ok. ]]
}

write_clickhouse_config() {
    mkdir -p "$CH_DIR"/{data,tmp,log,user_files,format_schemas}
    # ClickHouse 18.16 (Debian's package). No interserver_http_port: without it the server opens no
    # replication port, so it cannot clash with anything. listen_host only on loopback.
    cat >"$CH_DIR/config.xml" <<EOF
<?xml version="1.0"?>
<!-- Generated by scripts/services.sh; edits are overwritten on the next \`up\`. -->
<yandex>
    <logger>
        <level>information</level>
        <log>$CH_LOG</log>
        <errorlog>$CH_ERR_LOG</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>
    <listen_host>$HOST</listen_host>
    <http_port>$CH_HTTP_PORT</http_port>
    <tcp_port>$CH_TCP_PORT</tcp_port>
    <path>$CH_DIR/data/</path>
    <tmp_path>$CH_DIR/tmp/</tmp_path>
    <user_files_path>$CH_DIR/user_files/</user_files_path>
    <format_schema_path>$CH_DIR/format_schemas/</format_schema_path>
    <users_config>$CH_DIR/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <max_concurrent_queries>100</max_concurrent_queries>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mlock_executable>false</mlock_executable>
</yandex>
EOF
    write_users_config
}

# Two users, no password, reachable from loopback only: `default` (migrations, the pipeline, the
# tests) and $CH_READER (`botmeter serve`): readonly = 1, so it can read and kill its own queries
# but not write, create or change a setting. ClickHouse 18.16 has no CREATE USER: users live in
# users.xml, which the server re-reads within seconds when it changes. Written only when its text
# changes, atomically (a running server never reads half a file).
# `dir` is where users.xml goes; `extra` is more settings (XML) for both profiles (the cluster's
# distributed_product_mode).
write_users_config() {
    local dir=${1:-$CH_DIR} extra=${2:-}
    local file=$dir/users.xml
    cat >"$file.new" <<EOF
<?xml version="1.0"?>
<!-- Generated by scripts/services.sh; edits are overwritten on the next \`up\`. -->
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>$extra
        </default>
        <$CH_READER>
            <max_memory_usage>4000000000</max_memory_usage>$extra
            <max_execution_time>$CH_READER_MAX_EXECUTION_S</max_execution_time>
            <readonly>1</readonly>
        </$CH_READER>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>127.0.0.1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
        <$CH_READER>
            <password></password>
            <networks>
                <ip>127.0.0.1</ip>
            </networks>
            <profile>$CH_READER</profile>
            <quota>default</quota>
        </$CH_READER>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
EOF
    if cmp -s "$file.new" "$file"; then
        rm -f "$file.new"
    else
        mv -f "$file.new" "$file"
    fi
}

reader_reachable() {
    [[ $(curl -s --max-time 2 "http://$HOST:$CH_HTTP_PORT/?user=$CH_READER" --data-binary 'SELECT 1' 2>/dev/null) == 1 ]]
}

# A server this script started (its pid file is live and its config has this port) gets the current
# users.xml and is waited on until the reader answers; one it did not start is only checked.
clickhouse_reader() {
    if live_pid "$CH_PID" >/dev/null && grep -q "<http_port>$CH_HTTP_PORT</http_port>" "$CH_DIR/config.xml" 2>/dev/null; then
        write_users_config
        wait_until "clickhouse user $CH_READER" reader_reachable "$CH_PID" "$CH_ERR_LOG"
    elif ! reader_reachable; then
        log "clickhouse: warning: no user $CH_READER on the server at http://$HOST:$CH_HTTP_PORT, which this script did not start (the read-only API tests need it)"
    fi
}

clickhouse_up() {
    if clickhouse_reachable; then
        log "clickhouse: already reachable at http://$HOST:$CH_HTTP_PORT"
        clickhouse_reader
        return 0
    fi
    if ! live_pid "$CH_PID" >/dev/null; then
        local missing=()
        [[ -x /usr/sbin/clickhouse-server ]] || missing+=(clickhouse-server)
        command -v clickhouse-client >/dev/null || missing+=(clickhouse-client)
        command -v curl >/dev/null || missing+=(curl ca-certificates)
        if ((${#missing[@]} > 0)); then
            apt_install "${missing[@]}"
            # Where policy-rc.d allows it, the package starts the system-wide server (all
            # interfaces, /var/lib/clickhouse); stop it so it does not hold our ports.
            as_root invoke-rc.d clickhouse-server stop >/dev/null 2>&1 || true
        fi

        write_clickhouse_config
        rm -f "$CH_PID"
        log "clickhouse: starting on $HOST:$CH_HTTP_PORT (http) and $HOST:$CH_TCP_PORT (native), log $CH_LOG"
        # --daemon forks, detaches and points stdio at /dev/null; errors go to the log files.
        # Runs as the invoking user (root in CI): 18.16 has no check against running as root.
        /usr/sbin/clickhouse-server --config-file="$CH_DIR/config.xml" --pid-file="$CH_PID" --daemon ||
            die "clickhouse-server failed to start, see $CH_ERR_LOG"
    else
        log "clickhouse: pid $(<"$CH_PID") is running but not answering yet, waiting"
    fi
    wait_until clickhouse clickhouse_reachable "$CH_PID" "$CH_ERR_LOG"
    clickhouse_reader
    log "clickhouse: ready ($(curl -s "http://$HOST:$CH_HTTP_PORT/" --data-binary 'SELECT version()'))"
}

# --- Kafka (tansu) -----------------------------------------------------------------------------

# Sends a Kafka Metadata v0 request (api_key 3, correlation id "bmtr", client id "botmeter", all
# topics) and prints the first advertised broker as host:port. Fails if nothing answers in 5s.
kafka_metadata() {
    # shellcheck disable=SC2016 # the inner script expands its own variables
    timeout 5 bash -c '
        set -euo pipefail
        exec 3<>"/dev/tcp/$1/$2"
        printf "\x00\x00\x00\x16\x00\x03\x00\x00bmtr\x00\x08botmeter\x00\x00\x00\x00" >&3
        # dd reads the length prefix byte by byte; head could read past it and lose the rest.
        size=$(dd bs=1 count=4 status=none <&3 | od -An -tu4 --endian=big | tr -d " ")
        [[ $size =~ ^[0-9]+$ ]] && ((size >= 22)) || exit 1
        read -r -a b < <(head -c "$size" <&3 | od -An -v -tu1 | tr "\n" " " && echo)
        ((${#b[@]} == size)) || exit 1
        # correlation id, then brokers: [node_id int32, host string (int16 length), port int32]
        [[ "${b[*]:0:4}" == "98 109 116 114" ]] || exit 1
        ((b[4] + b[5] + b[6] + b[7] > 0)) || exit 1
        len=$((b[12] * 256 + b[13]))
        host=$(printf "%b" "$(printf "\\\\x%02x" "${b[@]:14:len}")")
        i=$((14 + len))
        printf "%s:%d\n" "$host" $(((b[i] << 24) + (b[i + 1] << 16) + (b[i + 2] << 8) + b[i + 3]))
    ' _ "$HOST" "$KAFKA_PORT" 2>/dev/null
}

kafka_reachable() {
    local advertised
    advertised=$(kafka_metadata) || return 1
    [[ $advertised == "$HOST:$KAFKA_PORT" ]] && return 0
    # Something answers, but it sends clients elsewhere.
    log "kafka: the broker on $HOST:$KAFKA_PORT advertises $advertised, expected $HOST:$KAFKA_PORT"
    return 2
}

# A tansu binary is usable if it is version $TANSU_VERSION and was built with a storage engine.
tansu_usable() {
    local bin=$1
    [[ -x $bin ]] || return 1
    [[ $("$bin" --version 2>/dev/null) == "tansu $TANSU_VERSION" ]] || return 1
    "$bin" --help 2>/dev/null | grep -q "^Storage engines:.*\b$TANSU_FEATURES\b"
}

# Prints the tansu binary to use: $BOTMETER_TANSU_BIN if set (kafka_up has checked it), else the
# first usable one on PATH or in cargo's bin directory.
find_tansu() {
    if [[ -n ${BOTMETER_TANSU_BIN:-} ]]; then
        printf '%s\n' "$BOTMETER_TANSU_BIN"
        return 0
    fi
    local candidate
    for candidate in "$(command -v tansu || true)" "${CARGO_HOME:-$HOME/.cargo}/bin/tansu"; do
        if [[ -n $candidate ]] && tansu_usable "$candidate"; then
            printf '%s\n' "$candidate"
            return 0
        fi
        if [[ -x $candidate ]]; then
            log "kafka: ignoring $candidate (not tansu $TANSU_VERSION built with --features $TANSU_FEATURES)"
        fi
    done
    return 1
}

install_tansu() {
    command -v cargo >/dev/null || die "cargo is needed to build tansu (install Rust with rustup)"
    command -v cc >/dev/null || apt_install gcc g++ make libc6-dev
    log "kafka: building tansu $TANSU_VERSION with cargo install; this takes about 25 minutes"
    cargo install --locked "tansu@$TANSU_VERSION" --features "$TANSU_FEATURES" >&2 ||
        die "cargo install tansu@$TANSU_VERSION failed"
}

kafka_up() {
    local rc=0
    kafka_reachable || rc=$?
    if ((rc == 0)); then
        log "kafka: already reachable at $HOST:$KAFKA_PORT"
        return 0
    fi
    ((rc != 2)) || die "kafka: stop the broker on $HOST:$KAFKA_PORT or choose another BOTMETER_KAFKA_PORT"
    if ! live_pid "$TANSU_PID" >/dev/null; then
        local bin
        if [[ -n ${BOTMETER_TANSU_BIN:-} ]] && ! tansu_usable "$BOTMETER_TANSU_BIN"; then
            die "BOTMETER_TANSU_BIN=$BOTMETER_TANSU_BIN is not tansu $TANSU_VERSION built with --features $TANSU_FEATURES"
        fi
        if ! bin=$(find_tansu); then
            install_tansu
            bin=$(find_tansu) || die "cargo install finished but no usable tansu binary was found"
        fi
        mkdir -p "$SVC_DIR"
        rm -f "$TANSU_PID"
        log "kafka: starting $bin on $HOST:$KAFKA_PORT (memory storage), log $TANSU_LOG"
        # tansu loads a .env from its working directory or any parent, so run it from /. Flags win
        # over its environment variables (LISTENER_URL, STORAGE_ENGINE, ...).
        (
            cd /
            exec setsid "$bin" broker \
                --listener-url "tcp://$HOST:$KAFKA_PORT" \
                --advertised-listener-url "tcp://$HOST:$KAFKA_PORT" \
                --storage-engine memory://tansu/ \
                --cluster-id botmeter \
                --silent \
                </dev/null >>"$TANSU_LOG" 2>&1
        ) &
        echo $! >"$TANSU_PID"
    else
        log "kafka: pid $(<"$TANSU_PID") is running but not answering yet, waiting"
    fi
    wait_until kafka kafka_reachable "$TANSU_PID" "$TANSU_LOG"
    log "kafka: ready"
}

# --- the local cluster: ZooKeeper and 2 shards x 2 replicas of ClickHouse ----------------------

# `scripts/services.sh cluster up|down|status|env`: a ClickHouse cluster on loopback for the cluster
# tests (tests/it/cluster.rs) and `botmeter migrate --cluster`. One ZooKeeper (Debian's package,
# standalone) and four ClickHouse 18.16 servers, shards 01 and 02 with replicas r1 and r2 each,
# named $CLUSTER_NAME in every server's remote_servers. Node i (1..4; shard (i+1)/2) listens on
# http CLUSTER_HTTP_BASE+i, native CLUSTER_TCP_BASE+i and interserver CLUSTER_INTERSERVER_BASE+i.
# Everything lives under .services/cluster/. Caches and pools are small: the four servers share 2
# cores and 24 GiB with everything else.
readonly CLUSTER_NAME=${BOTMETER_CLUSTER_NAME:-botmeter_cluster}
readonly CLUSTER_DIR=$SVC_DIR/cluster
readonly ZK_PORT=${BOTMETER_ZOOKEEPER_PORT:-2191}
readonly CLUSTER_HTTP_BASE=${BOTMETER_CLUSTER_HTTP_BASE:-8130}
readonly CLUSTER_TCP_BASE=${BOTMETER_CLUSTER_TCP_BASE:-9130}
readonly CLUSTER_INTERSERVER_BASE=${BOTMETER_CLUSTER_INTERSERVER_BASE:-9230}
readonly CLUSTER_NODES=(s1r1 s1r2 s2r1 s2r2)
readonly ZK_DIR=$CLUSTER_DIR/zookeeper
readonly ZK_PID=$ZK_DIR/zookeeper.pid
readonly ZK_LOG=$ZK_DIR/zookeeper.log
readonly ZK_JAR=/usr/share/java/zookeeper.jar

for port in "$ZK_PORT" "$CLUSTER_HTTP_BASE" "$CLUSTER_TCP_BASE" "$CLUSTER_INTERSERVER_BASE"; do
    [[ $port =~ ^[0-9]+$ ]] || die "expected a number, found \"$port\" (check the BOTMETER_* variables)"
done

# Answers ZooKeeper's `ruok` four-letter command with `imok`.
zookeeper_reachable() {
    [[ $(timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"; printf ruok >&3; head -c 4 <&3' _ "$HOST" "$ZK_PORT" 2>/dev/null) == imok ]]
}

zookeeper_up() {
    if zookeeper_reachable; then
        live_pid "$ZK_PID" >/dev/null ||
            die "zookeeper: $HOST:$ZK_PORT answers but this checkout did not start it (no live pid in ${ZK_PID#"$ROOT"/}); stop it or move the port (BOTMETER_ZOOKEEPER_PORT)"
        log "zookeeper: already reachable at $HOST:$ZK_PORT"
        return 0
    fi
    if ! live_pid "$ZK_PID" >/dev/null; then
        [[ -f $ZK_JAR ]] || apt_install zookeeper
        command -v java >/dev/null || apt_install default-jre-headless
        # The Debian package may start a system-wide server on 2181; ours does not use it.
        mkdir -p "$ZK_DIR/data"
        cat >"$ZK_DIR/zoo.cfg" <<EOF
# Generated by scripts/services.sh; edits are overwritten on the next \`cluster up\`.
tickTime=2000
dataDir=$ZK_DIR/data
clientPort=$ZK_PORT
clientPortAddress=$HOST
maxClientCnxns=200
admin.enableServer=false
4lw.commands.whitelist=ruok,stat,srvr
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
EOF
        rm -f "$ZK_PID"
        log "zookeeper: starting on $HOST:$ZK_PORT, log $ZK_LOG"
        (
            cd /
            exec setsid java -Xms64m -Xmx256m -XX:+UseSerialGC -cp "$ZK_JAR" \
                org.apache.zookeeper.server.ZooKeeperServerMain "$ZK_DIR/zoo.cfg" \
                </dev/null >>"$ZK_LOG" 2>&1
        ) &
        echo $! >"$ZK_PID"
    else
        log "zookeeper: pid $(<"$ZK_PID") is running but not answering yet, waiting"
    fi
    wait_until zookeeper zookeeper_reachable "$ZK_PID" "$ZK_LOG"
    log "zookeeper: ready"
}

# node_index s2r1 -> 3
node_index() {
    local i
    for i in "${!CLUSTER_NODES[@]}"; do
        [[ ${CLUSTER_NODES[$i]} == "$1" ]] && { echo $((i + 1)); return 0; }
    done
    die "unknown cluster node \"$1\"; expected one of ${CLUSTER_NODES[*]}"
}

node_http_port() { echo $((CLUSTER_HTTP_BASE + $(node_index "$1"))); }

node_reachable() {
    [[ $(curl -s --max-time 2 "http://$HOST:$(node_http_port "$1")/ping" 2>/dev/null) == Ok. ]]
}

# The remote_servers entry every node gets: two shards of two replicas. internal_replication: a
# Distributed insert writes one replica and ReplicatedMergeTree copies it to the other.
cluster_remote_servers() {
    local shard replica index
    echo "        <$CLUSTER_NAME>"
    for shard in 1 2; do
        echo "            <shard>"
        echo "                <internal_replication>true</internal_replication>"
        for replica in 1 2; do
            index=$(((shard - 1) * 2 + replica))
            echo "                <replica><host>$HOST</host><port>$((CLUSTER_TCP_BASE + index))</port></replica>"
        done
        echo "            </shard>"
    done
    echo "        </$CLUSTER_NAME>"
}

write_cluster_node_config() {
    local node=$1 index dir shard
    index=$(node_index "$node")
    dir=$CLUSTER_DIR/$node
    shard=0$(((index + 1) / 2))
    mkdir -p "$dir"/{data,tmp,log,user_files,format_schemas}
    cat >"$dir/config.xml" <<EOF
<?xml version="1.0"?>
<!-- Generated by scripts/services.sh; edits are overwritten on the next \`cluster up\`. -->
<yandex>
    <logger>
        <level>information</level>
        <log>$dir/log/clickhouse-server.log</log>
        <errorlog>$dir/log/clickhouse-server.err.log</errorlog>
        <size>50M</size>
        <count>2</count>
    </logger>
    <listen_host>$HOST</listen_host>
    <http_port>$((CLUSTER_HTTP_BASE + index))</http_port>
    <tcp_port>$((CLUSTER_TCP_BASE + index))</tcp_port>
    <interserver_http_port>$((CLUSTER_INTERSERVER_BASE + index))</interserver_http_port>
    <interserver_http_host>$HOST</interserver_http_host>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>$dir/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <max_concurrent_queries>100</max_concurrent_queries>
    <mark_cache_size>67108864</mark_cache_size>
    <uncompressed_cache_size>67108864</uncompressed_cache_size>
    <mlock_executable>false</mlock_executable>
    <zookeeper>
        <node><host>$HOST</host><port>$ZK_PORT</port></node>
        <session_timeout_ms>10000</session_timeout_ms>
        <operation_timeout_ms>5000</operation_timeout_ms>
    </zookeeper>
    <macros>
        <shard>$shard</shard>
        <replica>$node</replica>
    </macros>
    <remote_servers>
$(cluster_remote_servers)
    </remote_servers>
    <distributed_ddl>
        <path>/clickhouse/task_queue/ddl</path>
    </distributed_ddl>
    <merge_tree>
        <replicated_deduplication_window>1000</replicated_deduplication_window>
    </merge_tree>
</yandex>
EOF
    # distributed_product_mode: reports join and filter with subqueries over the Distributed
    # tables; `global` runs each subquery once on the initiator and ships its result to the shards.
    # background_pool_size: merges and fetches per server (default 16), small on 2 cores.
    # load_balancing in_order: a Distributed insert and the reads after it use the same replica of
    # each shard (its first live one), so what was just written is read back.
    # insert_distributed_sync: an insert into a Distributed table returns once the shards hold the
    # rows (botmeter sets it on its inserts; this covers clickhouse-client and the tests).
    write_cluster_users_config "$dir"
}

write_cluster_users_config() {
    write_users_config "$1" '
            <distributed_product_mode>global</distributed_product_mode>
            <background_pool_size>4</background_pool_size>
            <load_balancing>in_order</load_balancing>
            <insert_distributed_sync>1</insert_distributed_sync>'
}

cluster_node_up() {
    local node=$1 dir pid
    dir=$CLUSTER_DIR/$node
    pid=$dir/clickhouse-server.pid
    if node_reachable "$node"; then
        # The fault test stops and restarts the servers by their pid files: a server answering on
        # our port that this checkout did not start (another checkout's cluster) is refused.
        live_pid "$pid" >/dev/null ||
            die "cluster: $HOST:$(node_http_port "$node") answers but this checkout did not start it (no live pid in ${pid#"$ROOT"/}); stop it with the scripts/services.sh cluster down of the checkout that did, or move the ports (BOTMETER_CLUSTER_*_BASE)"
        # A running server re-reads users.xml within seconds when it changes.
        write_cluster_users_config "$dir"
        return 0
    fi
    if ! live_pid "$pid" >/dev/null; then
        write_cluster_node_config "$node"
        rm -f "$pid"
        log "cluster: starting $node on $HOST:$(node_http_port "$node") (http)"
        /usr/sbin/clickhouse-server --config-file="$dir/config.xml" --pid-file="$pid" --daemon ||
            die "clickhouse-server $node failed to start, see $dir/log/clickhouse-server.err.log"
    fi
}

# ClickHouse 18.16 sometimes aborts or hangs while it loads replicated tables at start-up (seen
# about one start in four here, right after "Create BackgroundSchedulePool"): a node that does
# not answer within 30 s is killed (it is ours, by its pid file) and started again, three times.
cluster_node_wait() {
    local node=$1 dir pid attempt started
    dir=$CLUSTER_DIR/$node
    pid=$dir/clickhouse-server.pid
    for attempt in 1 2 3; do
        started=$SECONDS
        while ((SECONDS - started < 30)); do
            node_reachable "$node" && return 0
            # --daemon writes the pid file a moment after it returns.
            if ! live_pid "$pid" >/dev/null && ((SECONDS - started >= 5)); then
                break
            fi
            sleep 0.5
        done
        log "cluster: $node did not answer within 30s (attempt $attempt); last lines of its error log:"
        tail -n 5 "$dir/log/clickhouse-server.err.log" >&2 2>/dev/null || true
        if live_pid "$pid" >/dev/null; then
            kill -KILL "$(<"$pid")" 2>/dev/null || true
            sleep 1
        fi
        rm -f "$pid"
        # A server SIGKILLed mid-insert (the fault tests do it) can find its parts differ from
        # what ZooKeeper records and refuse to start ("doesn't look like the set of parts in
        # ZooKeeper"). ClickHouse's documented recovery: the force_restore_data flag, with which it
        # detaches the unexpected parts and fetches the missing ones from the other replica.
        if tail -n 200 "$dir/log/clickhouse-server.err.log" 2>/dev/null |
            grep -q "doesn't look like the set of parts in ZooKeeper"; then
            log "cluster: $node's parts differ from ZooKeeper's; restarting it with force_restore_data"
            mkdir -p "$dir/data/flags"
            touch "$dir/data/flags/force_restore_data"
        fi
        cluster_node_up "$node"
    done
    node_reachable "$node" || die "clickhouse $node did not start, see $dir/log/clickhouse-server.err.log"
}

cluster_up() {
    local started=$SECONDS node
    [[ -x /usr/sbin/clickhouse-server ]] || apt_install clickhouse-server clickhouse-client
    command -v curl >/dev/null || apt_install curl ca-certificates
    zookeeper_up
    for node in "${CLUSTER_NODES[@]}"; do cluster_node_up "$node"; done
    for node in "${CLUSTER_NODES[@]}"; do cluster_node_wait "$node"; done
    log "cluster: $CLUSTER_NAME up in $((SECONDS - started))s (nodes ${CLUSTER_NODES[*]}, zookeeper $HOST:$ZK_PORT)"
}

cluster_down() {
    local node
    for node in "${CLUSTER_NODES[@]}"; do
        stop_pidfile "clickhouse $node" "$CLUSTER_DIR/$node/clickhouse-server.pid" clickhouse-server
    done
    stop_pidfile zookeeper "$ZK_PID" ZooKeeperServerMain
}

cluster_status() {
    local ok=0 node
    if zookeeper_reachable; then echo "zookeeper: reachable at $HOST:$ZK_PORT"; else echo "zookeeper: not reachable at $HOST:$ZK_PORT"; ok=1; fi
    for node in "${CLUSTER_NODES[@]}"; do
        if node_reachable "$node"; then
            echo "clickhouse $node: reachable at http://$HOST:$(node_http_port "$node")"
        else
            echo "clickhouse $node: not reachable at http://$HOST:$(node_http_port "$node")"
            ok=1
        fi
    done
    return "$ok"
}

# What the cluster tests read: the cluster's name, the node botmeter talks to (s1r1), the shards'
# replica URLs, every node's URL and pid file (the fault test stops and restarts them) and ZooKeeper's pid file.
cluster_env() {
    local node urls=() pids=()
    for node in "${CLUSTER_NODES[@]}"; do
        urls+=("$node=http://$HOST:$(node_http_port "$node")")
        pids+=("$node=$CLUSTER_DIR/$node/clickhouse-server.pid")
    done
    echo "export BOTMETER_CLUSTER=$CLUSTER_NAME"
    echo "export BOTMETER_CLUSTER_CLICKHOUSE_URL=http://$HOST:$(node_http_port s1r1)"
    # Each shard's replicas, for `botmeter run --clickhouse-shard-urls` (shards ';', replicas ',').
    echo "export BOTMETER_CLUSTER_SHARD_URLS='http://$HOST:$(node_http_port s1r1),http://$HOST:$(node_http_port s1r2);http://$HOST:$(node_http_port s2r1),http://$HOST:$(node_http_port s2r2)'"
    echo "export BOTMETER_CLUSTER_NODES=$(IFS=,; echo "${urls[*]}")"
    echo "export BOTMETER_CLUSTER_PIDS=$(IFS=,; echo "${pids[*]}")"
    echo "export BOTMETER_CLUSTER_ZOOKEEPER_PID=$ZK_PID"
}

cmd_cluster() {
    case ${1:-up} in
    up) cluster_up ;;
    down) cluster_down ;;
    status) cluster_status ;;
    env) cluster_env ;;
    *) die "unknown cluster command \"$1\"; expected up, down, status or env" ;;
    esac
}

# --- commands ----------------------------------------------------------------------------------

cmd_up() {
    local started=$SECONDS service
    for service in "$@"; do "${service}_up"; done
    log "up in $((SECONDS - started))s"
}

cmd_down() {
    local service
    for service in "$@"; do
        case $service in
        clickhouse) stop_pidfile clickhouse "$CH_PID" clickhouse-server ;;
        kafka) stop_pidfile kafka "$TANSU_PID" tansu ;;
        esac
    done
}

cmd_status() {
    local ok=0 pid service
    for service in "$@"; do
        case $service in
        clickhouse)
            if clickhouse_reachable; then
                pid=$(live_pid "$CH_PID" | sed 's/^/pid /' || true)
                echo "clickhouse: reachable at http://$HOST:$CH_HTTP_PORT, native $HOST:$CH_TCP_PORT (${pid:-not started by this script})"
            else
                echo "clickhouse: not reachable at http://$HOST:$CH_HTTP_PORT"
                ok=1
            fi
            ;;
        kafka)
            if kafka_reachable; then
                pid=$(live_pid "$TANSU_PID" | sed 's/^/pid /' || true)
                echo "kafka: reachable at $HOST:$KAFKA_PORT (${pid:-not started by this script})"
            else
                echo "kafka: not reachable at $HOST:$KAFKA_PORT"
                ok=1
            fi
            ;;
        esac
    done
    return "$ok"
}

cmd_env() {
    echo "export BOTMETER_CLICKHOUSE_URL=http://$HOST:$CH_HTTP_PORT"
    echo "export BOTMETER_CLICKHOUSE_READER_USER=$CH_READER"
    echo "export BOTMETER_KAFKA_BROKERS=$HOST:$KAFKA_PORT"
}

main() {
    local command=${1:-up} service
    (($# == 0)) || shift
    if [[ $command == cluster ]]; then
        cmd_cluster "$@"
        return
    fi
    local services=("$@")
    ((${#services[@]} > 0)) || services=(clickhouse kafka)
    for service in "${services[@]}"; do
        [[ $service == clickhouse || $service == kafka ]] ||
            die "unknown service \"$service\"; expected clickhouse or kafka"
    done

    case $command in
    up) cmd_up "${services[@]}" ;;
    down) cmd_down "${services[@]}" ;;
    status) cmd_status "${services[@]}" ;;
    env) cmd_env ;;
    *) die "unknown command \"$command\"; expected up, down, status or env" ;;
    esac
}

main "$@"
