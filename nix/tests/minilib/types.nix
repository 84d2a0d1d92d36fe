# The minilib's option types. A type is an attribute set:
#
#   name, description   for messages;
#   check value         whether one definition's value is acceptable (the
#                       module system checks every definition first);
#   merge loc defs      the option's value from its definitions, each
#                       { file, value }, in priority and mkOrder order;
#   emptyValue          { value = ...; } for the value of an option that has
#                       no definition at all, or { } when that is an error;
#   typeMerge other     for an option declared twice: the type both
#                       declarations describe, or null when they conflict.
#
# Types made of other types merge their elements' definitions with the
# module system, so that mkIf, mkMerge and the priorities work inside lists
# and attribute sets too.
{ lib }:

let
  inherit (builtins)
    all
    concatLists
    filter
    isAttrs
    isString
    length
    mapAttrs
    zipAttrsWith
    ;
  inherit (lib)
    imap1
    mergeDefinitions
    mergeDefaultOption
    mergeEqualOption
    mergeOneOption
    showOption
    ;

  mkOptionType =
    {
      name,
      description ? name,
      check ? (_: true),
      merge ? mergeDefaultOption,
      emptyValue ? { },
      typeMerge ? null,
      ...
    }@args:
    let
      self =
        args
        // {
          _type = "option-type";
          inherit
            name
            description
            check
            merge
            emptyValue
            ;
          # By default two declarations agree when their types have the same
          # name: right for types without parameters.
          typeMerge = if typeMerge != null then typeMerge else other: if other.name == name then self else null;
        };
    in
    self;

  noTypeMerge = _: null;
  # typeMerge of a type made by `make` from one element type.
  mergeElementTypes =
    name: make: elemType: other:
    let
      merged = elemType.typeMerge other.elemType;
    in
    if other.name == name && merged != null then make merged else null;

  values = defs: map (def: def.value) defs;

  # --- plain values ----------------------------------------------------------
  unspecified = mkOptionType { name = "unspecified"; };
  raw = mkOptionType {
    name = "raw";
    merge = mergeOneOption;
  };
  bool = mkOptionType {
    name = "bool";
    description = "boolean";
    check = builtins.isBool;
    merge = mergeEqualOption;
  };
  int = mkOptionType {
    name = "int";
    description = "signed integer";
    check = builtins.isInt;
    merge = mergeEqualOption;
  };
  str = mkOptionType {
    name = "str";
    description = "string";
    check = isString;
    merge = mergeEqualOption;
  };
  nonEmptyStr = mkOptionType {
    name = "nonEmptyStr";
    description = "non-empty string";
    check = x: isString x && builtins.match "[[:space:]]*" x == null;
    merge = mergeEqualOption;
  };
  strMatching =
    pattern:
    mkOptionType {
      name = "strMatching ${builtins.toJSON pattern}";
      description = "string matching the pattern ${pattern}";
      check = x: isString x && builtins.match pattern x != null;
      merge = mergeEqualOption;
      typeMerge = noTypeMerge;
    };
  # One line; a final newline is allowed and dropped.
  singleLineStr = mkOptionType {
    name = "singleLineStr";
    description = "(optionally newline-terminated) single-line string";
    check = x: isString x && builtins.match "[^\n\r]*\n?" x != null;
    merge = loc: defs: lib.removeSuffix "\n" (mergeEqualOption loc defs);
  };
  # Definitions joined with `separator`, in order.
  separatedString =
    separator:
    mkOptionType {
      name = "separatedString";
      description = "strings concatenated with ${builtins.toJSON separator}";
      check = isString;
      merge = loc: defs: builtins.concatStringsSep separator (values defs);
      emptyValue.value = "";
      typeMerge = noTypeMerge;
    };
  lines = separatedString "\n" // { name = "lines"; };
  commas = separatedString "," // { name = "commas"; };
  enum =
    choices:
    mkOptionType {
      name = "enum";
      description = "one of ${builtins.concatStringsSep ", " (map builtins.toJSON choices)}";
      check = x: builtins.elem x choices;
      merge = mergeEqualOption;
      typeMerge = noTypeMerge;
    };
  package = mkOptionType {
    name = "package";
    check = x: lib.isDerivation x || isString x && dirOf x == builtins.storeDir;
    merge = mergeOneOption;
  };
  path = mkOptionType {
    name = "path";
    check =
      x:
      (isString x || builtins.isPath x || x ? outPath || x ? __toString)
      && builtins.substring 0 1 (toString x) == "/";
    merge = mergeEqualOption;
  };

  # --- types of other types --------------------------------------------------
  # Each element merged on its own: an element that is mkIf false is left out.
  listOf =
    elemType:
    mkOptionType {
      name = "listOf";
      description = "list of ${elemType.description}";
      check = builtins.isList;
      merge =
        loc: defs:
        concatLists (
          imap1 (
            n: def:
            concatLists (
              imap1 (
                m: value:
                let
                  element = mergeDefinitions (loc ++ [ "[definition ${toString n}-entry ${toString m}]" ]) elemType [
                    {
                      inherit (def) file;
                      inherit value;
                    }
                  ];
                in
                if element.isDefined then [ element.value ] else [ ]
              ) def.value
            )
          ) defs
        );
      emptyValue.value = [ ];
      inherit elemType;
      typeMerge = mergeElementTypes "listOf" listOf elemType;
    };
  nonEmptyListOf =
    elemType:
    let
      list = listOf elemType;
    in
    list
    // {
      name = "nonEmptyListOf";
      description = "non-empty ${list.description}";
      check = x: list.check x && x != [ ];
      emptyValue = { };
      typeMerge = noTypeMerge;
    };

  # Each attribute merged from its definitions in every definition of the
  # set. attrsOf leaves out attributes without a definition left (mkIf
  # false), so looking at its names looks at their mkIf conditions;
  # lazyAttrsOf keeps every name, and fails on reading such an attribute.
  attrsWith =
    lazy: elemType:
    let
      name = if lazy then "lazyAttrsOf" else "attrsOf";
    in
    mkOptionType {
      inherit name;
      description = "${if lazy then "lazy " else ""}attribute set of ${elemType.description}";
      check = isAttrs;
      merge =
        loc: defs:
        let
          perName = zipAttrsWith (attr: mergeDefinitions (loc ++ [ attr ]) elemType) (
            map (
              def:
              mapAttrs (_: value: {
                inherit (def) file;
                inherit value;
              }) def.value
            ) defs
          );
        in
        mapAttrs (_: element: element.value) (
          if lazy then perName else lib.filterAttrs (_: element: element.isDefined) perName
        );
      emptyValue.value = { };
      inherit elemType;
      typeMerge = mergeElementTypes name (attrsWith lazy) elemType;
    };
  attrsOf = attrsWith false;
  lazyAttrsOf = attrsWith true;

  nullOr =
    elemType:
    mkOptionType {
      name = "nullOr";
      description = "null or ${elemType.description}";
      check = x: x == null || elemType.check x;
      merge =
        loc: defs:
        let
          nulls = length (filter (def: def.value == null) defs);
        in
        if nulls == 0 then
          elemType.merge loc defs
        else if nulls == length defs then
          null
        else
          throw "The option `${showOption loc}' is defined both as null and as something else, in ${
            builtins.concatStringsSep ", " (map (def: def.file) defs)
          }.";
      emptyValue.value = null;
      inherit elemType;
      typeMerge = mergeElementTypes "nullOr" nullOr elemType;
    };

  # Merged by the first type if it accepts every definition, else by the
  # second if it does; a mix must be a single definition.
  either =
    a: b:
    mkOptionType {
      name = "either";
      description = "${a.description} or ${b.description}";
      check = x: a.check x || b.check x;
      merge =
        loc: defs:
        if all a.check (values defs) then
          a.merge loc defs
        else if all b.check (values defs) then
          b.merge loc defs
        else
          mergeOneOption loc defs;
      typeMerge = noTypeMerge;
    };
  oneOf =
    types:
    if types == [ ] then
      throw "types.oneOf needs at least one type"
    else
      builtins.foldl' either (builtins.head types) (builtins.tail types);

  addCheck = type: extraCheck: type // { check = x: type.check x && extraCheck x; };

  # A definition that `from` accepts is converted by `convert` first.
  coercedTo =
    from: convert: to:
    mkOptionType {
      name = "coercedTo";
      description = "${to.description} or ${from.description} convertible to it";
      check = x: from.check x && to.check (convert x) || to.check x;
      merge = loc: defs: to.merge loc (map (def: if from.check def.value then def // { value = convert def.value; } else def) defs);
      inherit (to) emptyValue;
      typeMerge = noTypeMerge;
    };

  passwdEntry =
    type:
    addCheck type (s: builtins.match "[^:\n]*" s != null)
    // {
      name = "passwdEntry ${type.name}";
      description = "${type.description}, without colons or newlines";
    };

  # A configuration of its own, evaluated with `modules` and the definitions
  # (each an attribute set of its configuration, or a module); its modules
  # get the last part of the option's path as `name`. The type's modules are
  # imported one level down, which puts their definitions after those of
  # the definitions' modules and before those of the attribute sets (see
  # evalModules on the order).
  submoduleOf =
    modules:
    let
      configuration =
        loc: name: defs:
        (lib.evalModules {
          prefix = loc;
          modules =
            map (m: {
              _file = "the type of ${showOption loc}";
              imports = [ m ];
            }) modules
            ++ [ { _module.args.name = name; } ]
            ++ map (
              def: { _file = def.file; } // (if isAttrs def.value then { config = def.value; } else { imports = [ def.value ]; })
            ) defs;
        }).config;
    in
    mkOptionType {
      name = "submodule";
      check = x: isAttrs x || builtins.isFunction x || builtins.isPath x;
      merge = loc: defs: configuration loc (lib.last loc) defs;
      # Without definitions: the modules' defaults.
      emptyValue.value = configuration [ ] "‹name›" [ ];
      inherit modules;
      # Declarations are merged last to first (see evalModules), so this
      # keeps the modules in the order they were declared in.
      typeMerge = other: if other.name == "submodule" then submoduleOf (other.modules ++ modules) else null;
    };
  submodule = module: submoduleOf [ module ];
in
{
  inherit mkOptionType;
  types = {
    inherit
      addCheck
      attrsOf
      bool
      coercedTo
      commas
      either
      enum
      int
      lazyAttrsOf
      lines
      listOf
      nonEmptyListOf
      nonEmptyStr
      nullOr
      oneOf
      package
      passwdEntry
      path
      raw
      separatedString
      singleLineStr
      str
      strMatching
      submodule
      unspecified
      ;
  };
}
