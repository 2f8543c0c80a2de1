#!/bin/sh
# lb-backend: a backend VM registers itself with lbd, and takes itself out cleanly.
#
#   lb-backend register     wait until this backend's own health check passes, then add
#                           it to the service (or undrain it, if lbd still has it)
#   lb-backend deregister   drain it, wait until lbd says its last flow ended (the
#                           `backend_drained` event; at the latest lbd sends it when the
#                           service's deregistration_delay passes), then remove it
#
# Run by lb-backend.service (ExecStart / ExecStop), so the VM's shutdown waits for the
# drain. Talks to lbd's TCP admin API (api.listen) with curl; the token is read from a
# file and passed to curl on its stdin, never on a command line.
#
# Settings (environment; lb-backend.service reads /etc/default/lb-backend):
#   LB_API              lbd's admin API, http://HOST:PORT (its api.listen)        required
#   LB_TOKEN_FILE       file whose first line is the bearer token: a registration
#                       token of lbd's (api.registration_tokens) naming LB_SERVICE  required
#   LB_SERVICE          the service to join                                       required
#   LB_BACKEND_ADDRESS  this backend's address    default: source address of the default route
#   LB_BACKEND_PORT     this backend's port                                       required
#   LB_ZONE             this backend's availability zone                          required
#   LB_WEIGHT           its weight, 1..=1000                                      default 1
#   LB_HEALTH_CHECK     a command that succeeds once the app serves
#                       default: curl -fsS -o /dev/null --max-time 2 http://ADDRESS:PORT/
#   LB_HEALTH_TIMEOUT   seconds to wait for the health check before giving up    default 300
#   LB_DRAIN_TIMEOUT    seconds to wait for the drain; set it above the service's
#                       deregistration_delay (lbd ends the drain by then)          default 600
set -eu

say() { echo "lb-backend: $*" >&2; }
die() { say "$*"; exit 1; }

: "${LB_API:?LB_API is not set (lbd admin API, e.g. http://10.1.0.1:9500)}"
: "${LB_TOKEN_FILE:?LB_TOKEN_FILE is not set (file holding the bearer token)}"
: "${LB_SERVICE:?LB_SERVICE is not set (the service to join)}"
: "${LB_BACKEND_PORT:?LB_BACKEND_PORT is not set (this backend's port)}"
: "${LB_ZONE:?LB_ZONE is not set (this backend's availability zone)}"
LB_WEIGHT=${LB_WEIGHT:-1}
LB_HEALTH_TIMEOUT=${LB_HEALTH_TIMEOUT:-300}
LB_DRAIN_TIMEOUT=${LB_DRAIN_TIMEOUT:-600}
if [ -z "${LB_BACKEND_ADDRESS:-}" ]; then
    LB_BACKEND_ADDRESS=$(ip -4 -o route get 192.0.2.1 | sed -n 's/.* src \([0-9.]*\).*/\1/p')
    [ -n "$LB_BACKEND_ADDRESS" ] || die "no default route to take LB_BACKEND_ADDRESS from; set it"
fi
LB_HEALTH_CHECK=${LB_HEALTH_CHECK:-"curl -fsS -o /dev/null --max-time 2 http://$LB_BACKEND_ADDRESS:$LB_BACKEND_PORT/"}
BACKEND="$LB_BACKEND_ADDRESS:$LB_BACKEND_PORT"
BACKEND_PATH="/v1/services/$LB_SERVICE/backends/$BACKEND"

ANSWER=$(mktemp)
trap 'rm -f "$ANSWER"' EXIT

# api METHOD PATH [JSON]: the answer's body in $ANSWER, its HTTP status on stdout.
api() {
    token=$(head -n 1 "$LB_TOKEN_FILE") || die "cannot read $LB_TOKEN_FILE"
    printf 'header = "Authorization: Bearer %s"\n' "$token" |
        curl -sS -K - -o "$ANSWER" -w '%{http_code}' --connect-timeout 5 --max-time 30 \
            -X "$1" ${3:+-H "Content-Type: application/json" --data "$3"} "$LB_API$2" ||
        echo 000
}

# The last event number lbd has kept for the service (0 for none); nothing when lbd
# did not answer.
last_seq() {
    code=$(api GET "/v1/events?service=$LB_SERVICE")
    [ "$code" = 200 ] || return 0
    tail -n 1 "$ANSWER" | sed -n 's/^{"seq":\([0-9]*\),.*/\1/p' | grep . || echo 0
}

register() {
    say "waiting up to ${LB_HEALTH_TIMEOUT}s for the health check: $LB_HEALTH_CHECK"
    waited=0
    until sh -c "$LB_HEALTH_CHECK" >/dev/null 2>&1; do
        [ "$waited" -lt "$LB_HEALTH_TIMEOUT" ] || die "the health check did not pass within ${LB_HEALTH_TIMEOUT}s; not registering"
        sleep 1
        waited=$((waited + 1))
    done
    body=$(printf '{"address":"%s","port":%s,"zone":"%s","weight":%s}' \
        "$LB_BACKEND_ADDRESS" "$LB_BACKEND_PORT" "$LB_ZONE" "$LB_WEIGHT")
    code=$(api POST "/v1/services/$LB_SERVICE/backends" "$body")
    case $code in
    2??) say "registered $BACKEND in $LB_SERVICE (zone $LB_ZONE, weight $LB_WEIGHT)" ;;
    409)
        # lbd still has it (a shutdown that did not finish): take new flows again.
        code=$(api POST "$BACKEND_PATH/undrain")
        [ "$code" = 200 ] || die "undraining $BACKEND: HTTP $code: $(cat "$ANSWER")"
        say "$BACKEND was still in $LB_SERVICE: undrained"
        ;;
    *) die "registering $BACKEND in $LB_SERVICE: HTTP $code: $(cat "$ANSWER")" ;;
    esac
}

deregister() {
    since=$(last_seq)
    [ -n "$since" ] || die "reading lbd's events on $LB_API failed: $(cat "$ANSWER")"
    code=$(api POST "$BACKEND_PATH/drain")
    case $code in
    200) ;;
    404) say "$BACKEND is not in $LB_SERVICE: nothing to drain"; return 0 ;;
    *) die "draining $BACKEND: HTTP $code: $(cat "$ANSWER")" ;;
    esac
    # Already draining (no change): its drained event may be older than `since`.
    grep -q '"changes":\[\]' "$ANSWER" && since=0
    say "draining $BACKEND; waiting up to ${LB_DRAIN_TIMEOUT}s for its last flow to end"
    drained="\"event\":\"backend_drained\",\"service\":\"$LB_SERVICE\",\"backend\":\"$BACKEND\""
    waited=0
    while :; do
        # An lbd restarted meanwhile numbers its events from 1 again (and sends
        # backend_drained again for a backend still draining).
        now=$(last_seq)
        [ -z "$now" ] || [ "$now" -ge "$since" ] || since=0
        code=$(api GET "/v1/events?service=$LB_SERVICE&since=$since")
        if [ "$code" = 200 ] && grep -F "$drained" "$ANSWER" >&2; then
            break
        fi
        if [ "$waited" -ge "$LB_DRAIN_TIMEOUT" ]; then
            say "no backend_drained within ${LB_DRAIN_TIMEOUT}s; removing it anyway"
            break
        fi
        sleep 1
        waited=$((waited + 1))
    done
    code=$(api DELETE "$BACKEND_PATH")
    case $code in
    200 | 404) say "removed $BACKEND from $LB_SERVICE" ;;
    *) die "removing $BACKEND: HTTP $code: $(cat "$ANSWER")" ;;
    esac
}

case ${1:-} in
register) register ;;
deregister) deregister ;;
*) die "usage: lb-backend register|deregister" ;;
esac
