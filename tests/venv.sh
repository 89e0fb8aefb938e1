# Sourced by tests/matrix/synapse.sh and tests/whep/whep.sh: the Python venv each installs its
# tool into. Uses the caller's $PY (the interpreter that makes the venv) and die().

# venv_install VENV REQUIREMENT MODULES [NOTE]
#   Creates VENV and pip-installs REQUIREMENT into it, unless a finished install is there; MODULES
#   (a Python import list, e.g. "aiortc, av") must import afterwards. NOTE is added to the message.
venv_install() {
  local venv="$1" req="$2" modules="$3" note="${4:-}"
  # The stamp is written last: a venv without it is an interrupted install and is redone.
  [ -f "$venv/.onair-ready" ] && return 0
  echo "$(basename "$0"): installing $req into $venv (once$note)" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$PY" -m venv "$venv" || die "python3 -m venv failed (Debian/Ubuntu: apt-get install python3-venv)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$req" >&2 || die "pip install $req failed"
  "$venv/bin/python" -c "import $modules" || die "${modules%%,*} does not import after pip install"
  touch "$venv/.onair-ready"
}
