#!/usr/bin/env bash
# Stop the CPU-mode vLLM servers that scripts/start_vllm.sh started in the background.
#
# Each server was started as the leader of its own process group (setsid), and its pid file holds
# that group id. vLLM's API server spawns EngineCore and Worker processes (and a multiprocessing
# resource tracker); signalling the whole group stops them together, so nothing is left holding
# memory or the port. Stopping a server that is not running is not an error.
set -euo pipefail

CACHE_DIR=${VLLM_CPU_HOME:-$HOME/.cache/gateway-vllm-cpu}
RUN="$CACHE_DIR/run"
STOP_TIMEOUT=${VLLM_STOP_TIMEOUT:-15}
# A vLLM server that is still starting (not answering /health yet) does not act on SIGTERM: its
# engine process dies and the API server keeps waiting for it. Waiting long for it serves no purpose.
STARTING_GRACE=3

usage() {
    cat <<EOF
Usage: scripts/stop_vllm.sh [chat | chat2 | embed | all]

Stops the vLLM servers started by 'scripts/start_vllm.sh --cpu' (default: all): SIGTERM to each
server's process group, then SIGKILL to what is left after VLLM_STOP_TIMEOUT seconds (default 15;
$STARTING_GRACE for a server still starting, which does not act on SIGTERM).
Idempotent: a server that is not running is reported and skipped.

Environment:
  VLLM_CPU_HOME      cache folder with the pid files (default \$HOME/.cache/gateway-vllm-cpu)
  VLLM_STOP_TIMEOUT  seconds to wait after SIGTERM before SIGKILL (default 15)
  VLLM_CPU_CHAT_PORT, VLLM_CPU_CHAT2_PORT, VLLM_CPU_EMBED_PORT  the ports, as given to start_vllm.sh (default 8101, 8103, 8102)
EOF
}

log() { printf 'stop_vllm: %s\n' "$*" >&2; }
port_of() { case $1 in chat) echo "${VLLM_CPU_CHAT_PORT:-8101}" ;; chat2) echo "${VLLM_CPU_CHAT2_PORT:-8103}" ;; *) echo "${VLLM_CPU_EMBED_PORT:-8102}" ;; esac; }
port_open() { (: <>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
answers() { curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$1/health" 2>/dev/null; }

# Live (non-zombie) processes of a process group, plus any descendants of the leader that might
# have moved to a group of their own.
members() {
    local pgid=$1 pid state
    local -A seen=()
    local queue=()
    mapfile -t queue < <(pgrep -g "$pgid" 2>/dev/null || true)
    while ((${#queue[@]} > 0)); do
        pid=${queue[0]}
        queue=("${queue[@]:1}")
        [[ -n $pid && -z ${seen[$pid]:-} ]] || continue
        seen[$pid]=1
        local children=()
        mapfile -t children < <(pgrep -P "$pid" 2>/dev/null || true)
        queue+=("${children[@]+"${children[@]}"}")
    done
    for pid in "${!seen[@]}"; do
        # field 3 of /proc/PID/stat is the state; a zombie holds no memory and cannot be signalled
        state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
        [[ -n $state && $state != Z ]] && echo "$pid"
    done
    return 0
}

# Guard against a stale pid file whose number now belongs to an unrelated process.
looks_like_vllm() {
    local pid
    for pid in "$@"; do
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qi vllm && return 0
    done
    return 1
}

stop_one() {
    local target=$1 pid_file="$RUN/$1.pid" pgid procs=()
    if [[ ! -s $pid_file ]]; then
        if port_open "$(port_of "$target")"; then
            log "$target: no pid file, but port $(port_of "$target") is open: not started by start_vllm.sh (or by another VLLM_CPU_HOME); left alone"
        else
            log "$target: not running"
        fi
        rm -f "$pid_file"
        return 0
    fi
    pgid=$(cat "$pid_file")
    [[ $pgid =~ ^[0-9]+$ ]] || { log "$target: bad pid file $pid_file; removed"; rm -f "$pid_file"; return 0; }
    mapfile -t procs < <(members "$pgid")
    if ((${#procs[@]} == 0)); then
        log "$target: not running (stale pid file removed)"
        rm -f "$pid_file"
        return 0
    fi
    if ! looks_like_vllm "${procs[@]}"; then
        log "$target: pid $pgid is not a vLLM process any more (stale pid file removed); nothing killed"
        rm -f "$pid_file"
        return 0
    fi

    local grace=$STOP_TIMEOUT
    if ! answers "$(port_of "$target")" && ((grace > STARTING_GRACE)); then grace=$STARTING_GRACE; fi
    local t0=$SECONDS deadline=$((SECONDS + grace))
    # TERM to the group lets the API server shut its engine down cleanly; individual TERMs reach
    # any descendant outside the group.
    kill -TERM -- "-$pgid" 2>/dev/null || true
    kill -TERM "${procs[@]}" 2>/dev/null || true
    while ((SECONDS < deadline)); do
        mapfile -t procs < <(members "$pgid")
        ((${#procs[@]} == 0)) && break
        sleep 0.5
    done
    mapfile -t procs < <(members "$pgid")
    if ((${#procs[@]} > 0)); then
        log "$target: still running after ${grace} s; sending SIGKILL to ${procs[*]}"
        kill -KILL -- "-$pgid" 2>/dev/null || true
        kill -KILL "${procs[@]}" 2>/dev/null || true
        local i
        for ((i = 0; i < 20; i++)); do # SIGKILL is not ignorable; bounded anyway
            mapfile -t procs < <(members "$pgid")
            ((${#procs[@]} == 0)) && break
            sleep 0.25
        done
        if ((${#procs[@]} > 0)); then
            log "$target: could not stop processes ${procs[*]}"
            return 1
        fi
    fi
    rm -f "$pid_file"
    log "$target: stopped (process group $pgid, $((SECONDS - t0)) s)"
}

main() {
    local targets=() t rc=0
    while (($# > 0)); do
        case $1 in
        -h | --help) usage; exit 0 ;;
        chat | chat2 | embed) targets+=("$1") ;;
        all) targets+=(chat chat2 embed) ;;
        *) usage >&2; log "ERROR: unknown argument: $1"; exit 2 ;;
        esac
        shift
    done
    ((${#targets[@]} > 0)) || targets=(chat chat2 embed)
    for t in "${targets[@]}"; do stop_one "$t" || rc=1; done
    return "$rc"
}

main "$@"
