# sonix-run's own small `lib` for the evaluation tests (nix/tests): the
# helpers and the module system that nix/guest-module.nix, nix/agent.nix,
# flake.nix and the test harness use, under the names nixpkgs' lib gives
# them, written for this project from the documented semantics of
# nixpkgs' lib. Only what those files use is here; what it leaves out, and
# where it knowingly differs, is listed in docs/nix.md ("The evaluation
# tests"). nix/tests/module-system-tests.nix pins the semantics, and passes
# against nixpkgs' real lib too (NIXPKGS_LIB=DIR scripts/nix-eval-tests).
#
#   import nix/tests/minilib      # the lib attribute set
let
  lib = helpers // import ./modules.nix { inherit lib; } // import ./types.nix { inherit lib; };

  inherit (builtins)
    attrNames
    concatStringsSep
    elemAt
    filter
    foldl'
    genList
    length
    listToAttrs
    replaceStrings
    stringLength
    substring
    ;

  # --- lists -----------------------------------------------------------------
  imap0 = f: list: genList (i: f i (elemAt list i)) (length list);
  imap1 = f: imap0 (i: f (i + 1));
  drop = n: list: genList (i: elemAt list (i + n)) (max 0 (length list - n));
  last = list: elemAt list (length list - 1);
  # The first occurrence of each element, in order.
  unique = foldl' (kept: x: if builtins.elem x kept then kept else kept ++ [ x ]) [ ];
  optional = cond: x: if cond then [ x ] else [ ];
  optionals = cond: list: if cond then list else [ ];
  toList = x: if builtins.isList x then x else [ x ];
  max = a: b: if a > b then a else b;
  min = a: b: if a < b then a else b;

  # --- attribute sets --------------------------------------------------------
  mapAttrsToList = f: attrs: map (name: f name attrs.${name}) (attrNames attrs);
  filterAttrs =
    pred: attrs:
    listToAttrs (
      concatMap (name: optional (pred name attrs.${name}) { inherit name; value = attrs.${name}; }) (attrNames attrs)
    );
  genAttrs = names: f: listToAttrs (map (name: { inherit name; value = f name; }) names);
  optionalAttrs = cond: attrs: if cond then attrs else { };
  getAttrFromPath = path: attrs: foldl' (a: name: a.${name}) attrs path;
  setAttrByPath = path: value: foldl' (inner: name: { ${name} = inner; }) value (reverseList path);
  reverseList = list: genList (i: elemAt list (length list - 1 - i)) (length list);
  isDerivation = x: builtins.isAttrs x && x.type or null == "derivation";
  concatMap = builtins.concatMap;

  # --- strings ---------------------------------------------------------------
  concatStrings = concatStringsSep "";
  concatMapStrings = f: list: concatStrings (map f list);
  concatMapStringsSep = sep: f: list: concatStringsSep sep (map f list);
  optionalString = cond: s: if cond then s else "";
  hasPrefix = prefix: s: substring 0 (stringLength prefix) s == prefix;
  hasSuffix =
    suffix: s:
    let
      n = stringLength s;
      k = stringLength suffix;
    in
    k <= n && substring (n - k) k s == suffix;
  removePrefix =
    prefix: s:
    if hasPrefix prefix s then substring (stringLength prefix) (stringLength s - stringLength prefix) s else s;
  removeSuffix =
    suffix: s: if hasSuffix suffix s then substring 0 (stringLength s - stringLength suffix) s else s;
  stringToCharacters = s: genList (i: substring i 1 s) (stringLength s);
  # A regular expression (POSIX extended) that matches `s` literally.
  escapeRegex =
    let
      special = stringToCharacters "\\[{()^$?*+|.";
    in
    replaceStrings special (map (c: "\\" + c) special);
  splitString = sep: s: filter builtins.isString (builtins.split (escapeRegex (toString sep)) (toString s));
  hasInfix = infix: s: length (builtins.split (escapeRegex infix) s) > 1;
  upperChars = stringToCharacters "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
  lowerChars = stringToCharacters "abcdefghijklmnopqrstuvwxyz";
  toLower = replaceStrings upperChars lowerChars;
  # Upper-case hexadecimal digits, no leading zeros: 45 -> "2D".
  toHexString =
    n:
    let
      digit = d: substring d 1 "0123456789ABCDEF";
    in
    if n < 16 then digit n else toHexString (n / 16) + digit (n - 16 * (n / 16));
  # The code of an ASCII character (1 to 127), from a table made by letting
  # JSON decode "\u00XX" for each code.
  charToInt =
    let
      pad = s: if stringLength s < 2 then "0" + s else s;
      table = listToAttrs (
        genList (i: {
          name = builtins.fromJSON "\"\\u00${pad (toHexString (i + 1))}\"";
          value = i + 1;
        }) 127
      );
    in
    c: table.${c} or (throw "lib.strings.charToInt: ${builtins.toJSON c} is not a single ASCII character");
  # A word the shell reads as itself: left bare when made only of characters
  # no shell treats specially, single-quoted otherwise.
  escapeShellArg =
    arg:
    let
      s = toString arg;
    in
    if builtins.match "[[:alnum:],._+:@%/-]+" s != null then s else "'${replaceStrings [ "'" ] [ "'\\''" ] s}'";
  # Each word escaped, separated by spaces.
  escapeShellArgs = concatMapStringsSep " " escapeShellArg;
  # The condition, or an evaluation error with the message.
  assertMsg = pred: msg: pred || builtins.throw msg;

  # --- packages --------------------------------------------------------------
  # A package's output `name` if it has one (and was not picked as a
  # particular output already), else `out`, else the package itself.
  getOutput =
    name: pkg: if pkg.outputSpecified or false then pkg else pkg.${name} or pkg.out or pkg;
  makeSearchPathOutput =
    output: subDir: pkgs:
    concatStringsSep ":" (map (p: "${getOutput output p}/${subDir}") (filter (p: p != null) pkgs));
  makeBinPath = makeSearchPathOutput "bin" "bin";
  getExe =
    pkg:
    "${getOutput "bin" pkg}/bin/${
      pkg.meta.mainProgram or (throw "lib.getExe: ${pkg.name or "the package"} has no meta.mainProgram")
    }";
  # A copy of a source tree without version control directories, editor
  # backups, build products and nix-build's result links.
  cleanSource =
    src:
    builtins.path {
      path = src;
      name = "source";
      filter =
        path: type:
        let
          base = baseNameOf path;
        in
        !(
          (type == "directory" && builtins.elem base [ ".git" ".hg" ".svn" "CVS" ".jj" ])
          || hasSuffix "~" base
          || builtins.match "\\..*\\.sw[a-z]" base != null
          || hasSuffix ".o" base
          || hasSuffix ".so" base
          || (type == "symlink" && builtins.match "result(-.*)?" base != null)
          || type == "unknown"
        );
    };
  # System names, for meta.platforms (the common ones, not all nixpkgs knows).
  platforms = {
    linux = [
      "aarch64-linux"
      "armv6l-linux"
      "armv7l-linux"
      "i686-linux"
      "powerpc64le-linux"
      "riscv64-linux"
      "x86_64-linux"
    ];
    darwin = [
      "aarch64-darwin"
      "x86_64-darwin"
    ];
  };

  helpers = {
    inherit (builtins)
      all
      any
      attrNames
      attrValues
      concatStringsSep
      elem
      elemAt
      filter
      functionArgs
      head
      isAttrs
      isFunction
      isList
      length
      mapAttrs
      sort
      ;
    inherit
      charToInt
      cleanSource
      concatMap
      concatMapStrings
      concatMapStringsSep
      concatStrings
      drop
      filterAttrs
      genAttrs
      getAttrFromPath
      getExe
      hasInfix
      hasPrefix
      hasSuffix
      imap0
      imap1
      isDerivation
      last
      makeBinPath
      makeSearchPathOutput
      mapAttrsToList
      max
      min
      optional
      optionalAttrs
      optionalString
      optionals
      platforms
      removePrefix
      removeSuffix
      reverseList
      setAttrByPath
      splitString
      stringToCharacters
      toHexString
      toList
      toLower
      unique
      escapeShellArg
      escapeShellArgs
      assertMsg
      ;
    strings = { inherit charToInt; };
  };
in
lib
