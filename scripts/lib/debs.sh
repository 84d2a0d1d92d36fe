# Sourced by the scripts that bring in programs from other Debian suites
# than the host's (the Rust virtiofsd from trixie, QEMU 10 from
# bookworm-backports) without touching the system: the suite's package
# lists, apt's configuration and the downloads all live in the test cache,
# and what is unpacked goes to a directory named after the packages'
# versions and sha256 sums, so it is fetched once and replaced in one
# rename when the suite changes.
#
#   debs_fetch NAME SUITE PACKAGE...
#       SUITE: trixie, bookworm-backports, ...; fetches PACKAGE... (their
#       candidate versions in SUITE, checked against the lists' sha256) and
#       unpacks them into $cache/NAME/<key>/root. Sets debs_dir to
#       $cache/NAME/<key> and debs_new to 1 when it was made just now (the
#       caller then finishes it and calls debs_publish), else "".
#   debs_publish
#       moves the finished new directory into place and removes older ones.
#   debs_version PACKAGE   the version fetched.
#
# Expects say/die defined by the caller. Needs apt-get and dpkg-deb; no root.

debs_cache=${SONIX_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sonix-run}
debs_arch=$(dpkg --print-architecture)
debs_keyring=/usr/share/keyrings/debian-archive-keyring.gpg

declare -A debs_sha debs_ver

debs_fetch() {
	local name=$1 suite=$2
	shift 2
	local packages=("$@") base apt p info key tmp deb
	[ -r "$debs_keyring" ] || die "$debs_keyring missing: apt install debian-archive-keyring"
	base=$debs_cache/$name
	apt=$base/apt-$suite
	mkdir -p "$apt/state/lists/partial" "$apt/cache/archives/partial" "$apt/etc/sources.list.d" "$apt/etc/preferences.d" "$apt/etc/apt.conf.d"
	: >>"$apt/state/status"
	{
		echo "deb [arch=$debs_arch signed-by=$debs_keyring] http://deb.debian.org/debian $suite main"
		case "$suite" in
			*-backports) echo "deb [arch=$debs_arch signed-by=$debs_keyring] http://deb.debian.org/debian ${suite%-backports} main" ;;
			*) echo "deb [arch=$debs_arch signed-by=$debs_keyring] http://deb.debian.org/debian $suite-updates main"
			   echo "deb [arch=$debs_arch signed-by=$debs_keyring] http://deb.debian.org/debian-security $suite-security main" ;;
		esac
	} >"$apt/etc/sources.list"
	# Everything apt reads or writes is here; the system's sources,
	# preferences, configuration and dpkg status are not used.
	debs_aptopts=(
		-o "Dir::Etc::SourceList=$apt/etc/sources.list"
		-o "Dir::Etc::SourceParts=$apt/etc/sources.list.d"
		-o "Dir::Etc::Preferences=$apt/etc/preferences"
		-o "Dir::Etc::PreferencesParts=$apt/etc/preferences.d"
		-o "Dir::Etc::Parts=$apt/etc/apt.conf.d"
		-o "Dir::State=$apt/state"
		-o "Dir::State::status=$apt/state/status"
		-o "Dir::Cache=$apt/cache"
		-o "APT::Architecture=$debs_arch"
		-o "APT::Architectures=$debs_arch"
		-o "Acquire::Languages=none"
		-o "APT::Default-Release=$suite"
	)
	# As root apt drops to _apt to download, which cannot write the cache.
	[ "$(id -u)" -ne 0 ] || debs_aptopts+=(-o APT::Sandbox::User=root)
	if [ -z "$(find "$apt/state/lists" -maxdepth 1 -name "*_dists_${suite}_InRelease" -mmin -1440 2>/dev/null)" ]; then
		say "updating $suite's package lists (in $apt)"
		if ! apt-get "${debs_aptopts[@]}" update -qq >/dev/null; then
			compgen -G "$apt/state/lists/*_Packages*" >/dev/null || die "could not fetch $suite's package lists from deb.debian.org"
			say "could not update $suite's package lists; using the ones from before"
		fi
	fi
	for p in "${packages[@]}"; do
		info=$(apt-cache "${debs_aptopts[@]}" show --no-all-versions "$p/$suite" 2>/dev/null ||
			apt-cache "${debs_aptopts[@]}" show --no-all-versions "$p" 2>/dev/null) || die "$suite has no package $p"
		debs_sha[$p]=$(printf '%s\n' "$info" | sed -n 's/^SHA256: //p' | head -n1)
		debs_ver[$p]=$(printf '%s\n' "$info" | sed -n 's/^Version: //p' | head -n1)
		[ -n "${debs_sha[$p]}" ] && [ -n "${debs_ver[$p]}" ] || die "no version or sha256 for $p in $suite's lists"
	done
	key=$(for p in "${packages[@]}"; do echo "$p ${debs_ver[$p]} ${debs_sha[$p]}"; done | sha256sum | cut -c1-16)
	debs_dir=$base/$key
	debs_base=$base
	debs_new=
	if [ -e "$debs_dir/.complete" ]; then
		return 0
	fi
	say "fetching ${packages[*]} from $suite"
	tmp=$(mktemp -d "$base/.new-XXXXXX")
	debs_tmp=$tmp
	trap 'rm -rf "$debs_tmp"' EXIT
	chmod "$(printf %o $((0777 & ~$(umask))))" "$tmp" # mktemp made it 0700
	(cd "$tmp" && apt-get "${debs_aptopts[@]}" download -qq $(for p in "${packages[@]}"; do printf '%s=%s ' "$p" "${debs_ver[$p]}"; done) >/dev/null) ||
		die "apt-get download ${packages[*]} from $suite failed"
	for p in "${packages[@]}"; do
		deb=$(find "$tmp" -maxdepth 1 -name "${p}_*.deb" | head -n1)
		[ -n "$deb" ] || die "apt-get download left no $p package"
		echo "${debs_sha[$p]}  $deb" | sha256sum -c --quiet - || die "$deb: sha256 differs from $suite's lists"
		dpkg-deb -x "$deb" "$tmp/root"
		rm -f "$deb"
	done
	debs_new=1
}

# debs_stage is where the new directory is being finished (debs_dir's
# contents before debs_publish; paths inside must name debs_dir).
debs_stage() { echo "$debs_tmp"; }

debs_publish() {
	touch "$debs_tmp/.complete"
	rm -rf "$debs_dir"
	mv "$debs_tmp" "$debs_dir"
	trap - EXIT
	local old
	for old in "$debs_base"/*/; do
		old=${old%/}
		case "$old" in "$debs_dir" | "$debs_base"/apt-*) continue ;; esac
		[ -e "$old/.complete" ] && rm -rf "$old"
	done
	return 0
}

debs_version() { echo "${debs_ver[$1]}"; }
