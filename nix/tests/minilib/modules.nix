# The minilib's module system: evalModules, options, and the properties a
# definition can carry (mkIf, mkMerge, mkOverride and its named priorities,
# mkOrder with mkBefore and mkAfter), with the semantics nixpkgs documents
# for them:
#
#   - a module is a path, a function of { config, options, lib, ... } (any
#     other argument comes from config._module.args), or an attribute set;
#     { imports, options, config } or, without `options` and `config`, the
#     configuration itself; every module is loaded once (by path, or by
#     position among its parent's imports);
#   - mkIf and mkOverride around a set of options reach each option inside
#     it; mkIf's condition is looked at only when that option's value is;
#   - of an option's definitions, those of the highest priority (the lowest
#     number) count: mkVMOverride 10, mkForce 50, a plain definition 100,
#     mkDefault 1000, the option's `default` 1500; they are ordered by mkOrder
#     (mkBefore 500, plain 1000, mkAfter 1500), then by module, last found
#     first (see evalModules), and the option's type checks and merges them;
#     `apply` transforms the result;
#   - a definition of an option nobody declared is an error once the
#     configuration is looked at, also under mkIf false.
{ lib }:

let
  inherit (builtins)
    all
    any
    attrNames
    concatMap
    filter
    foldl'
    head
    isAttrs
    isString
    length
    mapAttrs
    tail
    typeOf
    zipAttrsWith
    ;
  inherit (lib)
    concatMapStrings
    concatMapStringsSep
    getAttrFromPath
    imap1
    optional
    optionalAttrs
    setAttrByPath
    types
    unique
    ;

  # --- properties --------------------------------------------------------------
  mkIf = condition: content: {
    _type = "if";
    inherit condition content;
  };
  mkMerge = contents: {
    _type = "merge";
    inherit contents;
  };
  mkOverride = priority: content: {
    _type = "override";
    inherit priority content;
  };
  mkOrder = priority: content: {
    _type = "order";
    inherit priority content;
  };
  mkOptionDefault = mkOverride 1500; # how an option's `default` is defined
  mkDefault = mkOverride 1000;
  plainPriority = 100;
  mkForce = mkOverride 50;
  mkVMOverride = mkOverride 10;
  mkBefore = mkOrder 500;
  plainOrder = 1000;
  mkAfter = mkOrder 1500;

  # The property a value carries, or null (`or` also covers non-sets).
  property = value: value._type or null;

  # A definition with mkMerge flattened and mkIf decided: the plain or
  # mkOverride/mkOrder values it stands for.
  discharge =
    loc: value:
    let
      p = property value;
    in
    if p == "merge" then
      concatMap (discharge loc) value.contents
    else if p == "if" then
      if value.condition == true then
        discharge loc value.content
      else if value.condition == false then
        [ ]
      else
        throw "mkIf in a definition of `${showOption loc}': the condition is a ${typeOf value.condition}, not a Boolean."
    else
      [ value ];

  # A definition of a set of options, as attribute sets of definitions of
  # its members, with each mkIf and mkOverride moved onto every member.
  spread =
    loc: value:
    let
      p = property value;
    in
    if p == "merge" then
      concatMap (spread loc) value.contents
    else if p == "if" then
      map (mapAttrs (_: mkIf value.condition)) (spread loc value.content)
    else if p == "override" then
      map (mapAttrs (_: mkOverride value.priority)) (spread loc value.content)
    else if isAttrs value then
      [ value ]
    else
      throw "A definition of `${showOption loc}' is a ${typeOf value}, but `${showOption loc}' is a set of options, defined by an attribute set.";

  priorityOf = def: if property def.value == "override" then def.value.priority else plainPriority;
  unwrap = kind: def: if property def.value == kind then def // { value = def.value.content; } else def;

  # The definitions of the highest priority, without their mkOverride.
  byPriority =
    defs:
    let
      highestPrio = foldl' (p: def: lib.min p (priorityOf def)) 9999 defs;
    in
    {
      inherit highestPrio;
      values = map (unwrap "override") (filter (def: priorityOf def == highestPrio) defs);
    };
  filterOverrides = defs: (byPriority defs).values;

  orderOf = def: if property def.value == "order" then def.value.priority else plainOrder;
  # builtins.sort is stable: equal orders keep the modules' order.
  sortByOrder = defs: map (unwrap "order") (builtins.sort (a: b: orderOf a < orderOf b) defs);

  # The value of `type` at `loc` from the definitions { file, value }.
  mergeDefinitions =
    loc: type: defs:
    let
      discharged = concatMap (
        def:
        map (value: {
          inherit (def) file;
          inherit value;
        }) (discharge loc def.value)
      ) defs;
      kept = byPriority discharged;
      final = sortByOrder kept.values;
      isDefined = final != [ ];
      invalid = filter (def: !type.check def.value) final;
    in
    {
      inherit final isDefined;
      inherit (kept) highestPrio;
      value =
        if isDefined then
          if invalid == [ ] then
            type.merge loc final
          else
            throw "A definition of the option `${showOption loc}' is not of type `${type.description}':${showDefs invalid}"
        else
          type.emptyValue.value or (throw "The option `${showOption loc}' is used but has no definition and no default.");
    };

  # --- options ---------------------------------------------------------------
  mkOption = attrs: attrs // { _type = "option"; };
  isOption = x: isAttrs x && x._type or null == "option";
  literalExpression = text: {
    _type = "literalExpression";
    inherit text;
  };

  showOption =
    loc:
    concatMapStringsSep "." (
      name: if builtins.match "[a-zA-Z_][a-zA-Z0-9_'-]*" name != null then name else builtins.toJSON name
    ) loc;
  showFiles = files: concatMapStringsSep ", " (f: "`${f}'") files;
  # A short rendering of a value for error messages: sets by their names
  # only, since their values may be large or fail to evaluate.
  showValue =
    v:
    if isString v then
      builtins.toJSON v
    else if v == true then
      "true"
    else if v == false then
      "false"
    else if v == null then
      "null"
    else if builtins.isInt v || builtins.isFloat v || builtins.isPath v then
      toString v
    else if builtins.isList v then
      "[ ${concatMapStrings (x: showValue x + " ") v}]"
    else if lib.isDerivation v then
      "<derivation ${v.name or "?"}>"
    else if isAttrs v then
      "{ ${concatMapStrings (n: "${n} = ...; ") (attrNames v)}}"
    else
      "<${typeOf v}>";
  showDefs = defs: concatMapStrings (def: "\n- in `${def.file}': ${showValue def.value}") defs;

  # Merge functions for types whose definitions cannot be combined.
  mergeEqualOption =
    loc: defs:
    let
      first = head defs;
      different = filter (def: def.value != first.value) (tail defs);
    in
    if defs == [ ] then
      throw "mergeEqualOption: no definitions of `${showOption loc}'"
    else if different == [ ] then
      first.value
    else
      throw "The option `${showOption loc}' has conflicting definition values:${
        showDefs [
          first
          (head different)
        ]
      }\nGive one of them a higher priority (lib.mkForce) or a lower one (lib.mkDefault).";
  mergeOneOption =
    loc: defs:
    if length defs == 1 then
      (head defs).value
    else
      throw "The option `${showOption loc}' takes a single definition, but has ${toString (length defs)}:${showDefs defs}";
  # For types that say nothing about merging: one definition as it is;
  # several lists concatenated, sets united (later names win), Booleans or'ed,
  # strings concatenated; anything else must agree.
  mergeDefaultOption =
    loc: defs:
    let
      values = map (def: def.value) defs;
    in
    if length defs == 1 then
      head values
    else if all builtins.isList values then
      builtins.concatLists values
    else if all isAttrs values then
      foldl' (a: b: a // b) { } values
    else if all builtins.isBool values then
      any (v: v) values
    else if all isString values then
      lib.concatStrings values
    else
      mergeEqualOption loc defs;

  # Several declarations of one option: their attributes together, types
  # combined where the types allow it (e.g. two submodules), nothing else
  # given twice.
  mergeDeclarations =
    loc: decls:
    foldl' (
      acc: d:
      let
        o = d.options;
        both = name: acc ? ${name} && o ? ${name};
        type = if both "type" then acc.type.typeMerge o.type else o.type or acc.type or null;
      in
      if both "default" || both "apply" || both "description" || both "example" || both "type" && type == null then
        throw "The option `${showOption loc}' is declared more than once, in ${showFiles (map (d: d.file) decls)}, with two `${
          head (filter both [ "default" "apply" "description" "example" "type" ])
        }'s."
      else
        acc // o // optionalAttrs (type != null) { inherit type; }
    ) { } decls;

  # An option from its declarations and definitions, with its value.
  evalOption =
    loc: decls: defs:
    let
      decl = mergeDeclarations loc decls;
      declarations = map (d: d.file) decls;
      type = decl.type or types.unspecified;
      allDefs =
        optional (decl ? default) {
          file = (head (filter (d: d.options ? default) decls)).file;
          value = mkOptionDefault decl.default;
        }
        ++ defs;
      merged = mergeDefinitions loc type allDefs;
    in
    decl
    // {
      _type = "option";
      inherit loc type declarations;
      inherit (merged) isDefined highestPrio;
      definitions = map (def: def.value) merged.final;
      files = unique (map (def: def.file) merged.final);
      value =
        if decl.readOnly or false && length allDefs > 1 then
          throw "The option `${showOption loc}' is read-only, but defined more than once:${showDefs defs}"
        else if decl ? apply then
          decl.apply merged.value
        else
          merged.value;
    };

  # One level of the option tree, at `loc`. decls: { file, options } with
  # the declarations at loc (options, and sets of options); defs: { file,
  # value } with definitions of loc. Returns the options and the
  # configuration at loc, and the definitions of undeclared names below it.
  evalTree =
    loc: decls: defs:
    let
      byName = list: zipAttrsWith (_: entries: entries) list;
      declsByName = byName (
        map (
          d:
          mapAttrs (_: options: {
            inherit (d) file;
            inherit options;
          }) d.options
        ) decls
      );
      defsByName = byName (
        concatMap (
          def:
          map (mapAttrs (
            _: value: {
              inherit (def) file;
              inherit value;
            }
          )) (spread loc def.value)
        ) defs
      );
      member =
        name: ds:
        let
          here = loc ++ [ name ];
          defsHere = defsByName.${name} or [ ];
          areOptions = map (d: isOption d.options) ds;
          option = evalOption here ds defsHere;
          tree = evalTree here ds defsHere;
        in
        if all (x: x) areOptions then
          {
            inherit option;
            config = option.value;
            undeclared = [ ];
          }
        else if any (x: x) areOptions then
          throw "`${showOption here}' is declared both as an option and as a set of options, in ${showFiles (map (d: d.file) ds)}."
        else
          {
            option = tree.options;
            inherit (tree) config undeclared;
          };
      members = mapAttrs member declsByName;
    in
    {
      options = mapAttrs (_: m: m.option) members;
      config = mapAttrs (_: m: m.config) members;
      undeclared =
        map (name: {
          loc = loc ++ [ name ];
          defs = defsByName.${name};
        }) (filter (name: !(declsByName ? ${name})) (attrNames defsByName))
        ++ concatMap (m: m.undeclared) (builtins.attrValues members);
    };

  # --- modules ---------------------------------------------------------------
  moduleAttributes = [
    "_file"
    "key"
    "imports"
    "options"
    "config"
  ];

  # A module as { _file, key, imports, options, config }.
  normalise =
    file: key: m:
    let
      extra = attrNames (removeAttrs m moduleAttributes);
      full =
        part:
        if extra == [ ] then
          m.${part} or { }
        else
          throw "The module `${file}' has `${head extra}' next to `options' or `config'; such a module may have only imports, options and config.";
    in
    if !isAttrs m then
      throw "The module `${file}' is a ${typeOf m}, not an attribute set or a function returning one."
    else if m ? _type && m._type != "if" && m._type != "override" then
      throw "The module `${file}' is a value made by mk${m._type} or the like, not a module (mkIf and mkOverride may stand for one, with `config' = it)."
    else
      {
        _file = toString (m._file or file);
        key = toString (m.key or key);
        imports = m.imports or [ ];
      }
      // (
        if m ? options || m ? config then
          {
            options = full "options";
            config = full "config";
          }
        else
          {
            options = { };
            config = removeAttrs m moduleAttributes;
          }
      );

  # Every module and what it imports, each once, loaded and normalised.
  collectModules =
    args: modules:
    let
      # A module function gets `args`, and for any other argument it names,
      # that entry of config._module.args.
      call =
        f:
        if builtins.isFunction f then
          f (args // mapAttrs (name: _: args.${name} or args.config._module.args.${name}) (builtins.functionArgs f))
        else
          f;
      load =
        parentFile: key: m:
        if builtins.isPath m || isString m then
          normalise (toString m) (toString m) (call (import m))
        else
          normalise parentFile key (call m);
      entries =
        parent:
        imap1 (
          n: m:
          let
            module = load parent._file "${parent.key}:anon-${toString n}" m;
          in
          {
            inherit (module) key;
            inherit module;
          }
        );
    in
    map (entry: entry.module) (
      builtins.genericClosure {
        startSet = entries {
          _file = "<unknown-file>";
          key = "";
        } modules;
        operator = entry: entries entry.module entry.module.imports;
      }
    );

  evalModules =
    {
      modules,
      specialArgs ? { },
      prefix ? [ ],
    }@args:
    let
      internal = {
        _file = "nix/tests/minilib/modules.nix";
        options._module.args = mkOption { type = types.lazyAttrsOf types.raw; };
      };
      loaded = collectModules (
        {
          inherit lib specialArgs;
          inherit (tree) config options;
        }
        // specialArgs
      ) (modules ++ [ internal ]);
      # Declarations and definitions are taken in the reverse of the order
      # the modules were found in (breadth first from `modules`): a later
      # module's list elements come first.
      found = lib.reverseList loaded;
      tree =
        evalTree prefix
          (map (m: {
            file = m._file;
            inherit (m) options;
          }) found)
          (
            map (m: {
              file = m._file;
              value = m.config;
            }) found
          );
      undeclared = head tree.undeclared;
      checked =
        builtins.seq (
          tree.undeclared == [ ]
          || throw "The option `${showOption undeclared.loc}' does not exist (no module declares it). Definitions:${showDefs undeclared.defs}"
        );
    in
    {
      options = checked tree.options;
      config = checked (removeAttrs tree.config [ "_module" ]);
      # The same evaluation with more modules (and special arguments).
      extendModules =
        {
          modules ? [ ],
          specialArgs ? { },
          prefix ? args.prefix or [ ],
        }:
        evalModules {
          modules = args.modules ++ modules;
          specialArgs = (args.specialArgs or { }) // specialArgs;
          inherit prefix;
        };
    };

  # A module that keeps an old option name working: what is defined for
  # `from` is defined for `to`, at the same priority, with a warning (where
  # the configuration has `warnings`); reading `from` gives `to`'s value.
  mkRenamedOptionModule =
    from: to:
    { config, options, ... }:
    let
      fromOpt = getAttrFromPath from options;
    in
    {
      options = setAttrByPath from (mkOption {
        type = (getAttrFromPath to options).type;
        description = "Renamed to `${showOption to}'.";
        visible = false;
        apply = _: getAttrFromPath to config;
      });
      config = mkMerge [
        (optionalAttrs (options ? warnings) {
          warnings = optional fromOpt.isDefined "The option `${showOption from}' defined in ${showFiles fromOpt.files} has been renamed to `${showOption to}'.";
        })
        (setAttrByPath to (
          mkIf fromOpt.isDefined (mkMerge (map (mkOverride fromOpt.highestPrio) fromOpt.definitions))
        ))
      ];
    };
in
{
  inherit
    evalModules
    filterOverrides
    isOption
    literalExpression
    mergeDefaultOption
    mergeDefinitions
    mergeEqualOption
    mergeOneOption
    mkAfter
    mkBefore
    mkDefault
    mkForce
    mkIf
    mkMerge
    mkOption
    mkOptionDefault
    mkOrder
    mkOverride
    mkRenamedOptionModule
    mkVMOverride
    showOption
    ;
}
