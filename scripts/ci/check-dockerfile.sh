#!/usr/bin/env bash
# Static checks of the Dockerfile (CI has no Docker engine to build it):
#   - .dockerignore keeps .var and target out of the build context
#   - every COPY source is tracked by git and not excluded by .dockerignore
#   - everything the build needs (Cargo.toml, Cargo.lock, the crate roots, the
#     [[bin]]/[[test]]/[[bench]]/[[example]] targets of Cargo.toml, build.rs, and the files
#     src/ pulls in with include_str!/include_bytes!/include!) is copied to the same place
#     under the build stage's project directory
#   - the build stage's rust image is at least Cargo.toml's rust-version, and built on the
#     same Debian release as the runtime image (the binary links the build's glibc)
#   - every apt package the Dockerfile installs exists in Debian (apt-cache show; apt-get
#     update first only if apt-cache knows none of them). The host's apt lists stand in for
#     the image's release: a mismatch of the two is reported with the result.
#   - `cargo build` uses --locked; the ENTRYPOINT runs the binary named after [package] name,
#     copied from the build stage's target/release
# One line per check; exits 1 if any failed (the summary names the first failure).
# Usage: scripts/ci/check-dockerfile.sh   (from anywhere; needs git, python3 >= 3.11, apt-cache)
set -uo pipefail
set -f # no globbing: Dockerfile words are split, never expanded
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1

checks=0
failed=0
first_failure=""
ok() {
  checks=$((checks + 1))
  printf 'check-dockerfile: ok   %s\n' "$1"
}
fail() {
  checks=$((checks + 1))
  failed=$((failed + 1))
  [ -n "$first_failure" ] || first_failure="$1"
  printf 'check-dockerfile: FAIL %s\n' "$1"
}
finish() {
  if [ "$failed" -gt 0 ]; then
    printf 'check-dockerfile: %d of %d checks failed; first: %s\n' "$failed" "$checks" "$first_failure"
    exit 1
  fi
  printf 'check-dockerfile: all %d checks passed\n' "$checks"
  exit 0
}

for f in Dockerfile Cargo.toml; do
  [ -f "$f" ] || { fail "$f exists"; finish; }
done
if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  fail "git work tree (COPY sources are checked against git ls-files)"
  finish
fi

# --- .dockerignore (Docker's rules: patterns cleaned, leading / dropped; `*` and `?` stop at
# `/`, `**` crosses directories; a pattern matching a parent directory excludes everything
# below it; the last matching line decides, `!` re-includes).
ignore_patterns=()
if [ -f .dockerignore ]; then
  while IFS= read -r line || [ -n "$line" ]; do
    line="${line#"${line%%[![:space:]]*}"}"
    line="${line%"${line##*[![:space:]]}"}"
    case "$line" in '' | '#'*) continue ;; esac
    ignore_patterns+=("$line")
  done <.dockerignore
fi

# Regex (ERE) for one .dockerignore pattern (without its `!`).
ignore_regex() {
  local p="$1" re="" c i
  while [[ "$p" == ./* ]]; do p="${p#./}"; done
  p="${p#/}"
  while [[ "$p" == */ ]]; do p="${p%/}"; done
  for ((i = 0; i < ${#p}; i++)); do
    c="${p:i:1}"
    if [ "$c" = "*" ] && [ "${p:i+1:1}" = "*" ]; then
      if [ "${p:i+2:1}" = "/" ]; then re+="(.*/)?"; i=$((i + 2)); else re+=".*"; i=$((i + 1)); fi
    elif [ "$c" = "*" ]; then re+="[^/]*"
    elif [ "$c" = "?" ]; then re+="[^/]"
    elif [[ "$c" == [.+\(\)\{\}\|^\$] ]]; then re+="\\$c"
    else re+="$c"
    fi
  done
  printf '^%s$' "$re"
}

# 0 if .dockerignore excludes PATH (relative to the context root), else 1.
ignored() {
  local path="$1" excluded=1 pat neg re prefix rest
  for pat in "${ignore_patterns[@]+"${ignore_patterns[@]}"}"; do
    neg=0
    if [[ "$pat" == '!'* ]]; then neg=1; pat="${pat#!}"; fi
    re="$(ignore_regex "$pat")"
    # The path itself or any parent directory.
    prefix="" rest="$path"
    while :; do
      if [ -z "$prefix" ]; then prefix="${rest%%/*}"; else prefix="$prefix/${rest%%/*}"; fi
      if [[ "$prefix" =~ $re ]]; then
        if [ "$neg" = 1 ]; then excluded=1; else excluded=0; fi
        break
      fi
      [[ "$rest" == */* ]] || break
      rest="${rest#*/}"
    done
  done
  return "$excluded"
}

if [ ! -f .dockerignore ]; then
  fail ".dockerignore exists"
else
  for p in .var target; do
    if ignored "$p"; then ok ".dockerignore excludes $p"; else fail ".dockerignore excludes $p"; fi
  done
fi

# --- Dockerfile: instructions with continuation lines joined, comments dropped.
mapfile -t instructions < <(
  sed -e 's/\r$//' Dockerfile | awk '
    /^[[:space:]]*#/ && cont == "" { next }
    {
      line = $0
      if (line ~ /\\[[:space:]]*$/) { sub(/\\[[:space:]]*$/, "", line); cont = cont line " "; next }
      line = cont line; cont = ""
      if (line ~ /^[[:space:]]*$/) next
      sub(/^[[:space:]]+/, "", line)
      print line
    }'
)

# Per stage: base image, name; the stage running `cargo build` and the last stage.
stage=-1
stage_image=()
stage_name=()
build_stage=-1
workdir=()
copies=()      # "stage|workdir|dest|n_sources|source" for COPY/ADD without --from
from_copies=() # "stage|workdir|from|dest|source" for COPY --from
apt_packages=() # "stage|package"
cargo_line=""
entrypoints=() # per stage: the first word of its ENTRYPOINT

# Words of an instruction's arguments: exec form ["a", "b"] or whitespace-separated.
words() {
  local args="$1"
  if [[ "$args" =~ ^\[.*\]$ ]]; then
    python3 -c 'import json, sys; print("\n".join(json.loads(sys.argv[1])))' "$args"
  else
    # shellcheck disable=SC2086
    printf '%s\n' $args
  fi
}

for ins in "${instructions[@]}"; do
  keyword="${ins%%[[:space:]]*}"
  args="${ins#"$keyword"}"
  args="${args#"${args%%[![:space:]]*}"}"
  case "${keyword^^}" in
    FROM)
      stage=$((stage + 1))
      read -r -a w <<<"$args"
      i=0
      while [[ "${w[i]:-}" == --* ]]; do i=$((i + 1)); done
      stage_image[stage]="${w[i]:-}"
      stage_name[stage]=""
      if [ "${w[i + 1]:-}" != "" ] && [ "${w[i + 1]^^}" = "AS" ]; then stage_name[stage]="${w[i + 2]:-}"; fi
      workdir[stage]="/"
      ;;
    WORKDIR)
      if [[ "$args" == /* ]]; then workdir[stage]="$args"; else workdir[stage]="${workdir[stage]%/}/$args"; fi
      ;;
    COPY | ADD)
      mapfile -t w < <(words "$args")
      from=""
      while [[ "${w[0]:-}" == --* ]]; do
        [[ "${w[0]}" == --from=* ]] && from="${w[0]#--from=}"
        w=("${w[@]:1}")
      done
      n=$((${#w[@]} - 1))
      [ "$n" -ge 1 ] || { fail "COPY/ADD with a source and a destination: $ins"; continue; }
      dest="${w[n]}"
      for ((j = 0; j < n; j++)); do
        if [ -n "$from" ]; then
          from_copies+=("$stage|${workdir[stage]}|$from|$dest|${w[j]}")
        else
          copies+=("$stage|${workdir[stage]}|$dest|$n|${w[j]}")
        fi
      done
      ;;
    RUN)
      if [[ "$args" == *"cargo build"* ]]; then
        build_stage=$stage
        cargo_line="$args"
      fi
      # Packages after each `apt-get install` up to the next shell operator.
      rest="$args"
      while [[ "$rest" == *"apt-get install"* ]]; do
        rest="${rest#*apt-get install}"
        seg="${rest%%[&;|]*}"
        for word in $seg; do
          [[ "$word" == -* ]] || apt_packages+=("$stage|$word")
        done
      done
      ;;
    ENTRYPOINT)
      entrypoints[stage]="$(words "$args" | head -n 1)"
      ;;
  esac
done
last_stage=$stage
entrypoint="${entrypoints[last_stage]:-}"
if [ "$build_stage" -lt 0 ]; then
  fail "a stage runs cargo build"
  finish
fi

# --- Cargo.toml: package name, rust-version, and the files the build reads.
cargo_info="$(
  python3 - <<'EOF'
import os
import sys

try:
    import tomllib
except ImportError:
    sys.exit("python3 >= 3.11 (tomllib) is needed")
with open("Cargo.toml", "rb") as f:
    cargo = tomllib.load(f)
pkg = cargo.get("package", {})
print("name", pkg.get("name", ""))
print("rust-version", pkg.get("rust-version", ""))
need = ["Cargo.toml", "Cargo.lock"]
lib = cargo.get("lib", {})
if lib.get("path") or os.path.exists("src/lib.rs"):
    need.append(lib.get("path", "src/lib.rs"))
if os.path.exists("src/main.rs"):
    need.append("src/main.rs")
build = pkg.get("build", "build.rs" if os.path.exists("build.rs") else None)
if build:
    need.append(build)
for kind, folder in (("bin", "src/bin"), ("test", "tests"), ("bench", "benches"), ("example", "examples")):
    for target in cargo.get(kind, []):
        path = target.get("path")
        if not path:
            name = target.get("name", "")
            single, multi = f"{folder}/{name}.rs", f"{folder}/{name}/main.rs"
            path = multi if not os.path.exists(single) and os.path.exists(multi) else single
        need.append(path)
for path in need:
    print("need", os.path.normpath(path))
EOF
)" || { fail "Cargo.toml parses"; finish; }
pkg_name="$(sed -n 's/^name //p' <<<"$cargo_info")"
rust_version="$(sed -n 's/^rust-version //p' <<<"$cargo_info")"
mapfile -t needed < <(sed -n 's/^need //p' <<<"$cargo_info")
# include_str!/include_bytes!/include! in src/, resolved against the including file.
while IFS=: read -r file _ match; do
  rel="$(sed -E 's/.*"([^"]+)".*/\1/' <<<"$match")"
  needed+=("$(realpath -m --relative-to=. "$(dirname "$file")/$rel")")
done < <(grep -rnoE 'include(_str|_bytes)?!\s*\(\s*"[^"]+"' --include='*.rs' src || true)

# --- COPY sources: tracked by git, not excluded by .dockerignore.
for c in "${copies[@]+"${copies[@]}"}"; do
  IFS='|' read -r _ _ _ _ src <<<"$c"
  src_rel="$(realpath -m --relative-to=. "$src")"
  tracked="$(git ls-files -- "$src_rel" | wc -l)"
  if [ "$tracked" -eq 0 ]; then
    fail "COPY source $src is tracked by git"
  elif ignored "$src_rel"; then
    fail "COPY source $src is not excluded by .dockerignore"
  else
    ok "COPY source $src: $tracked file(s) tracked by git"
  fi
done

# --- Needed files: copied into the build stage at <project dir>/<path>, where the project
# dir is where Cargo.toml lands.
# Container path of repository path $1 in the build stage, or nothing.
container_path() {
  local p="$1" c st wd dest n src dabs out=""
  for c in "${copies[@]+"${copies[@]}"}"; do
    IFS='|' read -r st wd dest n src <<<"$c"
    [ "$st" = "$build_stage" ] || continue
    src="$(realpath -m --relative-to=. "$src")"
    if [[ "$dest" == /* ]]; then dabs="$dest"; else dabs="${wd%/}/$dest"; fi
    if [ -d "$src" ]; then
      # A directory's contents are copied into dest.
      if [ "$src" = "." ]; then out="$(realpath -m "$dabs/$p")"
      elif [[ "$p" == "$src"/* ]]; then out="$(realpath -m "$dabs/${p#"$src"/}")"
      fi
    elif [ "$src" = "$p" ]; then
      if [[ "$dest" == */ ]] || [ "$n" -gt 1 ]; then out="$(realpath -m "$dabs/$(basename "$p")")"
      else out="$(realpath -m "$dabs")"
      fi
    fi
  done
  printf '%s' "$out"
}
project="$(container_path Cargo.toml)"
project="${project%/Cargo.toml}"
if [ -z "$project" ]; then
  fail "Cargo.toml is copied into the build stage"
else
  for p in "${needed[@]}"; do
    got="$(container_path "$p")"
    if [ ! -e "$p" ]; then
      fail "build needs $p: it does not exist"
    elif [ "$got" != "$project/$p" ]; then
      fail "build needs $p at $project/$p: ${got:-not copied}"
    elif ignored "$p"; then
      fail "build needs $p: excluded by .dockerignore"
    else
      ok "build needs $p: copied to $got"
    fi
  done
fi

# --- Images: rust version, Debian release.
build_image="${stage_image[build_stage]}"
runtime_image="${stage_image[last_stage]}"
tag="${build_image#*:}"
[ "$tag" != "$build_image" ] || tag=""
image_rust="$(grep -oE '^[0-9]+\.[0-9]+(\.[0-9]+)?' <<<"$tag" || true)"
if [[ "$build_image" != rust:* ]] || [ -z "$image_rust" ]; then
  fail "build image $build_image is rust:<major.minor>"
elif [ -z "$rust_version" ]; then
  fail "Cargo.toml has a rust-version"
elif [ "$(printf '%s\n%s\n' "$rust_version" "$image_rust" | sort -V | head -n 1)" != "$rust_version" ]; then
  fail "build image Rust $image_rust >= rust-version $rust_version"
else
  ok "build image Rust $image_rust >= rust-version $rust_version"
fi
debian_of() { grep -oE '(buster|bullseye|bookworm|trixie|forky|duke|sid)' <<<"$1" | head -n 1; }
build_debian="$(debian_of "$build_image")"
runtime_debian="$(debian_of "$runtime_image")"
if [ -z "$build_debian" ] || [ "$build_debian" != "$runtime_debian" ]; then
  fail "build ($build_image) and runtime ($runtime_image) images on one Debian release"
else
  ok "build ($build_image) and runtime ($runtime_image) images on Debian $build_debian"
fi

# --- apt packages.
if ! command -v apt-cache >/dev/null 2>&1; then
  fail "apt-cache is available (Debian) to look up the apt packages"
else
  host_debian="$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release 2>/dev/null | tr -d '"')"
  known=0
  for a in "${apt_packages[@]+"${apt_packages[@]}"}"; do
    apt-cache show "${a#*|}" >/dev/null 2>&1 && known=$((known + 1))
  done
  if [ "${#apt_packages[@]}" -gt 0 ] && [ "$known" -eq 0 ]; then
    echo "check-dockerfile: apt-cache knows none of the packages; apt-get update" >&2
    apt-get update -qq >&2 || echo "check-dockerfile: apt-get update failed" >&2
  fi
  for a in "${apt_packages[@]+"${apt_packages[@]}"}"; do
    st="${a%%|*}" pkg="${a#*|}"
    where="stage ${stage_name[st]:-$st} (${stage_image[st]})"
    if [ -n "$host_debian" ] && [ "$host_debian" != "$(debian_of "${stage_image[st]}")" ]; then
      where+=", looked up in this host's $host_debian lists"
    fi
    if apt-cache show "$pkg" >/dev/null 2>&1; then
      ok "apt package $pkg exists in Debian: $where"
    else
      fail "apt package $pkg exists in Debian: $where"
    fi
  done
fi

# --- cargo build, ENTRYPOINT, binary.
read -r -a cargo_words <<<"$cargo_line"
if printf '%s\n' "${cargo_words[@]}" | grep -qx -- '--locked'; then
  ok "cargo build uses --locked"
else
  fail "cargo build uses --locked: $cargo_line"
fi
ep="$(basename "${entrypoint:-}")"
if [ -z "$pkg_name" ]; then
  fail "Cargo.toml has a [package] name"
elif [ "$ep" != "$pkg_name" ]; then
  fail "final ENTRYPOINT ${entrypoint:-(none)} runs the package binary $pkg_name"
else
  ok "final ENTRYPOINT $entrypoint runs the package binary $pkg_name"
fi
bin_copied=""
for c in "${from_copies[@]+"${from_copies[@]}"}"; do
  IFS='|' read -r st _ from dest src <<<"$c"
  [ "$st" = "$last_stage" ] || continue
  [ "$from" = "${stage_name[build_stage]}" ] || [ "$from" = "$build_stage" ] || continue
  if [ "$src" = "$project/target/release/$pkg_name" ]; then
    if [[ "$dest" == */ ]]; then dest="$dest$pkg_name"; fi
    bin_copied="$dest"
  fi
done
if [ -z "$bin_copied" ]; then
  fail "final stage copies $project/target/release/$pkg_name from the build stage"
elif [[ "$entrypoint" == /* ]] && [ "$entrypoint" != "$bin_copied" ]; then
  fail "ENTRYPOINT $entrypoint is the copied binary $bin_copied"
elif [[ "$entrypoint" != /* ]] && [[ "$bin_copied" != /usr/local/bin/* && "$bin_copied" != /usr/bin/* ]]; then
  fail "the copied binary $bin_copied is on PATH for ENTRYPOINT $entrypoint"
else
  ok "final stage runs $bin_copied, copied from the build stage's target/release"
fi

finish
