# Shared by the image scripts: the cache folder outside the repository and buildah with its
# storage kept there too (nothing under /var/lib/containers, nothing left mounted).
cache_root="${DATACACHE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/eci-datacache-operator}"
images_dir="$cache_root/images"
buildah_root="$cache_root/buildah"
mkdir -p "$images_dir" "$buildah_root"

log() { echo "images: $*" >&2; }
need() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { log "needs $tool (Debian: apt-get install buildah debootstrap)"; exit 1; }
  done
}
bah() {
  buildah --root "$buildah_root/storage" --runroot "$buildah_root/run" --storage-driver vfs "$@"
}
# The Debian mirror this machine's apt already uses (never a host written into the repository).
debian_mirror() {
  local uri
  uri="$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n 1)"
  [[ -n "$uri" ]] || uri="$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n 1)"
  [[ -n "$uri" ]] || { log "no Debian mirror found in /etc/apt/sources.list*"; exit 1; }
  echo "$uri"
}
