#!/usr/bin/env bash
# Install regimed as a systemd service; safe to run again (it upgrades the code and keeps the
# configuration). See deploy/README.md.
#
#   /opt/regimed/venv                       virtualenv with regimed (upgraded on every run)
#   /etc/regimed/config.toml                copied once from the repository, never overwritten
#   /var/lib/regimed                        state: SQLite store and model artifacts
#   /etc/systemd/system/regimed.service     the unit (replaced when it differs)
#   user and group `regimed`                a system account without a login shell
#
# --prefix DIR puts the same tree under DIR for a staged or unprivileged install: no user is
# created, nothing is chown-ed and systemctl is not called.
set -euo pipefail
umask 022  # the service user must be able to read the venv whatever root's umask is

usage() {
    cat <<'EOF'
usage: deploy/install.sh [--prefix DIR] [--python PYTHON] [--pip-args ARGS]

  --prefix DIR      install below DIR (no useradd, chown or systemctl; no root needed)
  --python PYTHON   interpreter for the virtualenv (default: python3; 3.11 or newer)
  --pip-args ARGS   extra arguments for `pip install`, split on spaces
                    (tests use "--no-deps" to skip the dependencies they already have)
EOF
}

die() {
    echo "install.sh: $*" >&2
    exit 2
}

prefix=""
python="python3"
pip_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix)
            [ $# -ge 2 ] || die "--prefix needs a directory"
            prefix="$2"
            shift 2
            ;;
        --python)
            [ $# -ge 2 ] || die "--python needs an interpreter"
            python="$2"
            shift 2
            ;;
        --pip-args)
            [ $# -ge 2 ] || die "--pip-args needs a value"
            read -r -a pip_args <<<"$2"
            shift 2
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            die "unknown argument: $1"
            ;;
    esac
done

source_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "$python: Python 3.11 or newer is needed"
[ -f "$source_dir/pyproject.toml" ] || die "$source_dir: not a regimed source tree"

if [ -n "$prefix" ]; then
    mkdir -p "$prefix"
    prefix="$(cd "$prefix" && pwd)"
    system=false
else
    [ "$(id -u)" -eq 0 ] || die "run as root, or pass --prefix DIR for an unprivileged install"
    system=true
    # The venv runs on its base interpreter, which the unit cannot see in a home directory
    # (ProtectHome=yes; /root is mode 0700 anyway): e.g. a pyenv build under /root/.pyenv.
    base="$("$python" -c 'import sys; print(sys.base_prefix)')"
    case "$base/" in
        /root/* | /home/* | /run/user/*)
            die "$python lives in $base, which the service cannot reach (ProtectHome=yes);" \
                "pass --python /usr/bin/python3 or another interpreter outside home directories"
            ;;
    esac
fi

venv="$prefix/opt/regimed/venv"
etc_dir="$prefix/etc/regimed"
state_dir="$prefix/var/lib/regimed"
unit_dir="$prefix/etc/systemd/system"
unit_changed=false
leftovers=()
trap 'rm -rf ${leftovers[@]+"${leftovers[@]}"}' EXIT

say() {
    printf '%-40s %s\n' "$1" "$2"
}

# 1. The service account (system installs only).
if $system; then
    if getent passwd regimed >/dev/null; then
        say "user regimed" "unchanged"
    else
        useradd --system --user-group --home-dir /var/lib/regimed --no-create-home \
            --shell /usr/sbin/nologin --comment "regimed daemon" regimed
        say "user regimed" "created"
    fi
fi

# 2. The virtualenv, and regimed in it. pip replaces the installed copy with the source's.
if [ -x "$venv/bin/python" ]; then
    say "$venv" "exists"
else
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
    say "$venv" "created"
fi
# setuptools builds in the source tree and keeps what it built there (a module deleted from the
# source would live on in build/), so pip gets a fresh copy; its path is fixed, so that an
# unchanged source installs identically.
staging="$prefix/opt/regimed/.source"
rm -rf "$staging"
mkdir -p "$staging"
leftovers+=("$staging")
tar -C "$source_dir" -cf - --exclude='./.*' --exclude=./build --exclude=./dist \
    --exclude='*.egg-info' --exclude=__pycache__ . | tar -C "$staging" -xf -
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    ${pip_args[@]+"${pip_args[@]}"} "$staging"
rm -rf "$staging"
say "$venv/bin/regimed" "installed $("$venv/bin/python" -c \
    'from importlib.metadata import version; print(version("regimed"))')"

# 3. Configuration: copied once, never overwritten; store.path made absolute so that
#    `regimed status --config /etc/regimed/config.toml` finds the store from any directory.
mkdir -p "$etc_dir"
if [ -e "$etc_dir/config.toml" ]; then
    say "$etc_dir/config.toml" "kept"
else
    tmp="$(mktemp "$etc_dir/.config.toml.XXXXXX")"
    leftovers+=("$tmp")
    sed '/^\[store\]/,/^\[/ s|^path = .*|path = "'"$state_dir"'/regimed.db"|' \
        "$source_dir/config.toml" >"$tmp"
    grep -qxF "path = \"$state_dir/regimed.db\"" "$tmp" ||
        die "$source_dir/config.toml: found no store.path to point at $state_dir"
    chmod 0640 "$tmp"
    if $system; then
        chown root:regimed "$tmp"
    fi
    mv "$tmp" "$etc_dir/config.toml"
    say "$etc_dir/config.toml" "created"
fi
# systemd keeps ConfigurationDirectory= owned by root: the group lets the service read it.
if $system; then
    chown root:regimed "$etc_dir"
    chmod 0750 "$etc_dir"
fi
"$venv/bin/regimed" check-config "$etc_dir/config.toml" >/dev/null ||
    die "$etc_dir/config.toml: rejected by \`regimed check-config\` (its message names the key)"

# 4. State directory (systemd's StateDirectory= would create it too; we want it for the CLI).
if [ -d "$state_dir" ]; then
    say "$state_dir" "exists"
else
    mkdir -p "$state_dir"
    chmod 0750 "$state_dir"
    say "$state_dir" "created"
fi
if $system; then
    chown regimed:regimed "$state_dir"
fi

# 5. The unit.
mkdir -p "$unit_dir"
if cmp -s "$source_dir/deploy/systemd/regimed.service" "$unit_dir/regimed.service"; then
    say "$unit_dir/regimed.service" "unchanged"
else
    install -m 0644 "$source_dir/deploy/systemd/regimed.service" "$unit_dir/regimed.service"
    say "$unit_dir/regimed.service" "installed"
    unit_changed=true
fi
if $system && $unit_changed && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    say "systemctl daemon-reload" "done"
fi

if $system; then
    echo "next: systemctl enable --now regimed   (after an upgrade: systemctl restart regimed)"
fi
