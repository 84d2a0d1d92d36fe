# Tests of the module system and helpers the evaluation tests rely on: the
# semantics nix/tests/minilib implements, pinned so that the same tests pass
# with nixpkgs' own lib (NIXPKGS_LIB=DIR scripts/nix-eval-tests) and with the
# minilib. Run as part of nix/tests/default.nix.
{ lib }:

let
  inherit (lib)
    mkOption
    types
    mkIf
    mkMerge
    mkDefault
    mkForce
    mkOverride
    mkBefore
    mkAfter
    ;

  evalWith = modules: lib.evalModules { inherit modules; };
  eval = modules: (evalWith modules).config;
  # Whether evaluating `value` (to weak head normal form, or all of it)
  # fails with an error the module system throws.
  fails = value: !(builtins.tryEval value).success;
  failsDeep = value: fails (builtins.deepSeq value value);

  declarations = {
    options = {
      n = mkOption {
        type = types.int;
        default = 1;
      };
      b = mkOption {
        type = types.bool;
        default = false;
      };
      s = mkOption { type = types.str; };
      l = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      a = mkOption {
        type = types.attrsOf types.int;
        default = { };
      };
      text = mkOption {
        type = types.lines;
        default = "";
      };
      ns.inner = mkOption {
        type = types.int;
        default = 0;
      };
    };
  };
  # The configuration of `declarations` and one module per definition.
  with' = defs: eval ([ declarations ] ++ defs);
  n = defs: (with' (map (v: { n = v; }) defs)).n;
  highestPrio = defs: (evalWith ([ declarations ] ++ map (v: { n = v; }) defs)).options.n.highestPrio;

  # A set of submodules, declared twice (like NixOS's fileSystems, which
  # the guest module extends).
  entries = {
    options.entries = mkOption {
      type = types.attrsOf (
        types.submodule (
          { name, config, ... }:
          {
            options = {
              label = mkOption {
                type = types.str;
                default = name;
              };
              tags = mkOption {
                type = types.listOf types.str;
                default = [ ];
              };
              size = mkOption {
                type = types.int;
                default = 0;
              };
            };
            config.tags = [ "from-type" ];
          }
        )
      );
      default = { };
    };
  };
  entriesExtended = {
    options.entries = mkOption {
      type = types.attrsOf (
        types.submodule (
          { config, ... }:
          {
            options.big = mkOption {
              type = types.bool;
              default = false;
            };
            config.big = config.size > 10;
          }
        )
      );
    };
  };

  # assertions as NixOS declares and uses them.
  assertionModules = [
    {
      options.assertions = mkOption {
        type = types.listOf types.unspecified;
        default = [ ];
      };
      options.cond = mkOption {
        type = types.bool;
        default = false;
      };
    }
    (
      { config, ... }:
      {
        assertions = [
          {
            assertion = false;
            message = "always";
          }
          (mkIf config.cond {
            assertion = false;
            message = "when cond";
          })
        ];
      }
    )
    (
      { config, ... }:
      {
        assertions = mkIf (!config.cond) [
          {
            assertion = true;
            message = "holds";
          }
          {
            assertion = false;
            message = "unless cond";
          }
        ];
      }
    )
  ];
  failedAssertions =
    modules: map (a: a.message) (builtins.filter (a: !a.assertion) (eval (assertionModules ++ modules)).assertions);

  renamed = [
    declarations
    {
      options.warnings = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      options.new.enable = mkOption {
        type = types.bool;
        default = true;
      };
    }
    (lib.mkRenamedOptionModule [ "old" "enable" ] [ "new" "enable" ])
  ];
in
{
  testLibPriorityLowestNumberWins = {
    expr = map n [
      [ ]
      [ (mkDefault 2) ]
      [
        (mkDefault 2)
        3
      ]
      [
        (mkDefault 2)
        3
        (mkForce 4)
      ]
      [
        3
        (mkForce 4)
        (mkOverride 10 5)
      ]
      [
        (mkOverride 10 5)
        (mkForce 4)
        (mkDefault 2)
      ]
    ];
    expected = [
      1
      2
      3
      4
      5
      5
    ];
  };
  testLibHighestPrio = {
    expr = map highestPrio [
      [ ]
      [ (mkDefault 2) ]
      [ 3 ]
      [ (mkForce 4) ]
      [ (mkOverride 10 5) ]
    ];
    expected = [
      1500
      1000
      100
      50
      10
    ];
  };
  testLibLowerPriorityListsDropped = {
    expr =
      (with' [
        { l = mkDefault [ "default" ]; }
        { l = [ "a" ]; }
        { l = [ "b" ]; }
      ]).l;
    # Equal priorities: the later module's definition first.
    expected = [
      "b"
      "a"
    ];
  };
  testLibDefinitionsInReverseModuleOrder = {
    expr =
      (with' [
        {
          imports = [ { l = [ "imported by first" ]; } ];
          l = [ "first" ];
        }
        { l = [ "second" ]; }
      ]).l;
    expected = [
      "imported by first"
      "second"
      "first"
    ];
  };
  testLibMkBeforeMkAfter = {
    expr =
      (with' [
        { l = mkAfter [ "after" ]; }
        { l = [ "plain 1" ]; }
        { l = mkBefore [ "before" ]; }
        { l = [ "plain 2" ]; }
      ]).l;
    expected = [
      "before"
      "plain 2"
      "plain 1"
      "after"
    ];
  };
  testLibMkIfFalseDropsDefinitions = {
    expr =
      let
        c = with' [
          {
            n = mkIf false 7;
            a = {
              kept = 1;
              dropped = mkIf false 2;
            };
            l = [
              "kept"
              (mkIf false "dropped")
            ];
          }
        ];
      in
      {
        inherit (c) n a l;
        sDefined = (evalWith [ declarations { s = mkIf false "x"; } ]).options.s.isDefined;
        sFails = fails (with' [ { s = mkIf false "x"; } ]).s;
      };
    expected = {
      n = 1;
      a.kept = 1;
      l = [ "kept" ];
      sDefined = false;
      sFails = true;
    };
  };
  testLibMkIfConditionMayReadConfig = {
    expr =
      map
        (
          extra:
          let
            c = with' (
              [
                (
                  { config, ... }:
                  {
                    config = mkIf config.b {
                      n = 5;
                      ns.inner = 6;
                    };
                  }
                )
              ]
              ++ extra
            );
          in
          [
            c.n
            c.ns.inner
          ]
        )
        [
          [ ]
          [ { b = true; } ]
        ];
    expected = [
      [
        1
        0
      ]
      [
        5
        6
      ]
    ];
  };
  testLibMkIfNeedsABoolean = {
    expr = fails (with' [ { n = mkIf "yes" 2; } ]).n;
    expected = true;
  };
  testLibMkMerge = {
    expr =
      let
        c = with' [
          {
            n = mkMerge [
              (mkIf false 9)
              (mkDefault 2)
            ];
            l = mkMerge [
              [ "a" ]
              (mkIf true [ "b" ])
              (mkMerge [ [ "c" ] ])
            ];
          }
          {
            config = mkMerge [
              { b = true; }
              (mkIf true { text = "merged"; })
            ];
          }
        ];
      in
      {
        inherit (c) n l b text;
      };
    expected = {
      n = 2;
      l = [
        "a"
        "b"
        "c"
      ];
      b = true;
      text = "merged";
    };
  };
  testLibMkOverrideOnASetReachesEachOption = {
    expr =
      let
        c = with' [
          {
            n = 3;
            l = [ "plain" ];
          }
          (mkForce {
            n = 4;
            l = [ "forced" ];
          })
        ];
      in
      {
        inherit (c) n l;
      };
    expected = {
      n = 4;
      l = [ "forced" ];
    };
  };
  testLibConflictingDefinitions = {
    expr = {
      differ = fails (with' [ { b = true; } { b = false; } ]).b;
      differStr = fails (with' [ { s = "x"; } { s = "y"; } ]).s;
      agree = (with' [ { b = true; } { b = true; } ]).b;
      # The guest module's way: its mkDefault gives way to a plain value.
      defaultGivesWay = (with' [ { b = mkDefault true; } { b = false; } ]).b;
    };
    expected = {
      differ = true;
      differStr = true;
      agree = true;
      defaultGivesWay = false;
    };
  };
  testLibUndeclaredOptionFails = {
    expr = {
      top = fails (with' [ { nope = 1; } ]);
      nested = fails (with' [ { ns.nope = 1; } ]);
      # Even under mkIf false: every definition must name an option.
      underMkIfFalse = fails (with' [ (mkIf false { nope = 1; }) ]);
      inSubmodule = fails (eval [ entries { entries.x.nope = 1; } ]).entries.x;
      declared = fails (with' [ { ns.inner = 1; } ]);
    };
    expected = {
      top = true;
      nested = true;
      underMkIfFalse = true;
      inSubmodule = true;
      declared = false;
    };
  };
  testLibTypeChecks = {
    expr = map fails [
      (with' [ { n = "three"; } ]).n
      (with' [ { l = "a"; } ]).l
      (builtins.deepSeq (with' [ { l = [ 1 ]; } ]).l null)
      (with' [ { a.x = true; } ]).a.x
      (with' [ { n = 3; } ]).n
    ];
    expected = [
      true
      true
      true
      true
      false
    ];
  };
  testLibSubmodules = {
    expr =
      let
        c = eval [
          entries
          entriesExtended
          {
            entries.one.tags = [ "first" ];
            entries.two.size = 20;
          }
          {
            entries.one = {
              tags = [ "second" ];
              size = 3;
            };
          }
          { entries.two = { config, ... }: { tags = [ "from a function" ]; }; }
        ];
      in
      {
        names = builtins.attrNames c.entries;
        one = c.entries.one;
        two = c.entries.two;
      };
    expected = {
      names = [
        "one"
        "two"
      ];
      one = {
        label = "one";
        # The type's own definitions come first, then the attribute sets'
        # in module order (reversed once outside the submodule, once in it).
        tags = [
          "from-type"
          "first"
          "second"
        ];
        size = 3;
        big = false;
      };
      two = {
        label = "two";
        # A definition that is a module comes before the type's.
        tags = [
          "from a function"
          "from-type"
        ];
        size = 20;
        big = true;
      };
    };
  };
  testLibSubmoduleConflictFails = {
    expr = failsDeep
      (eval [
        entries
        { entries.x.size = 1; }
        { entries.x.size = 2; }
      ]).entries.x;
    expected = true;
  };
  testLibAssertions = {
    expr = [
      (failedAssertions [ ])
      (failedAssertions [ { cond = true; } ])
    ];
    expected = [
      [
        "unless cond"
        "always"
      ]
      [
        "always"
        "when cond"
      ]
    ];
  };
  testLibOtherTypes = {
    expr =
      let
        opt = type: defs: (eval ([ { options.o = mkOption { inherit type; }; } ] ++ map (v: { o = v; }) defs)).o;
        nullOrInt = types.nullOr types.int;
        intOrStr = types.either types.int types.str;
        flags = types.coercedTo (types.listOf types.str) (names: lib.genAttrs names (_: true)) (
          types.attrsOf types.bool
        );
      in
      {
        nulls = opt nullOrInt [
          null
          null
        ];
        nullAndInt = fails (opt nullOrInt [
          null
          1
        ]);
        eitherInt = opt intOrStr [ 1 ];
        eitherStr = opt intOrStr [ "s" ];
        eitherMixed = fails (opt intOrStr [
          1
          "s"
        ]);
        coerced = opt flags [
          [ "x" ]
          { y = false; }
        ];
        lines = opt types.lines [
          "one"
          (mkBefore "zero")
          "two"
        ];
        enumBad = fails (opt (types.enum [ "a" ]) [ "b" ]);
        strMatching = opt (types.strMatching "[a-z]+") [ "abc" ];
        strMatchingBad = fails (opt (types.strMatching "[a-z]+") [ "ABC" ]);
        emptyList = opt (types.listOf types.str) [ ];
        emptyAttrs = opt (types.attrsOf types.str) [ ];
        emptyStrFails = fails (opt types.str [ ]);
        emptySubmodule = opt (types.submodule {
          options.x = mkOption {
            type = types.int;
            default = 7;
          };
        }) [ ];
      };
    expected = {
      nulls = null;
      nullAndInt = true;
      eitherInt = 1;
      eitherStr = "s";
      eitherMixed = true;
      coerced = {
        x = true;
        y = false;
      };
      lines = "zero\ntwo\none";
      enumBad = true;
      strMatching = "abc";
      strMatchingBad = true;
      emptyList = [ ];
      emptyAttrs = { };
      emptyStrFails = true;
      emptySubmodule.x = 7;
    };
  };
  testLibDefaultsAndApply = {
    expr =
      let
        declared = {
          options.o = mkOption {
            type = types.listOf types.int;
            default = [ 1 ];
            apply = map (x: x * 10);
          };
        };
      in
      {
        default = (eval [ declared ]).o;
        defined = (eval [ declared { o = [ 2 ]; } ]).o;
        declaredTwiceWithDefaults = fails
          (eval [
            declared
            {
              options.o = mkOption {
                type = types.listOf types.int;
                default = [ 3 ];
              };
            }
          ]).o;
        readOnlySetTwice = fails
          (eval [
            {
              options.r = mkOption {
                type = types.int;
                readOnly = true;
              };
            }
            { r = 1; }
            { r = 1; }
          ]).r;
      };
    expected = {
      default = [ 10 ];
      defined = [ 20 ];
      declaredTwiceWithDefaults = true;
      readOnlySetTwice = true;
    };
  };
  testLibModuleArguments = {
    expr =
      let
        c = eval [
          entries
          { _module.args.greeting = "hello"; }
          (
            { greeting, options, ... }:
            {
              entries.${greeting}.tags = [ (if options ? entries then "sees options" else "blind") ];
            }
          )
        ];
      in
      c.entries.hello;
    expected = {
      label = "hello";
      tags = [
        "from-type"
        "sees options"
      ];
      size = 0;
    };
  };
  testLibRenamedOption = {
    expr =
      map
        (
          defs:
          let
            c = eval (renamed ++ defs);
          in
          {
            new = c.new.enable;
            old = c.old.enable;
            warned = builtins.length c.warnings;
            mentionsNew = builtins.all (lib.hasInfix "`new.enable'") c.warnings;
          }
        )
        [
          [ ]
          [ { old.enable = false; } ]
          # The old name's definition keeps its priority.
          [ { old.enable = mkDefault false; } ]
          [
            { old.enable = mkDefault false; }
            { new.enable = true; }
          ]
        ];
    expected = [
      {
        new = true;
        old = true;
        warned = 0;
        mentionsNew = true;
      }
      {
        new = false;
        old = false;
        warned = 1;
        mentionsNew = true;
      }
      {
        new = false;
        old = false;
        warned = 1;
        mentionsNew = true;
      }
      {
        new = true;
        old = true;
        warned = 1;
        mentionsNew = true;
      }
    ];
  };
  testLibStringHelpers = {
    expr = {
      shell = map lib.escapeShellArg [
        "/sysroot/var"
        "a b"
        "it's"
        ""
      ];
      split = lib.splitString "." "a.b..c";
      infix = map (lib.hasInfix "b\nc") [
        "ab\ncd"
        "abc"
      ];
      prefix = [
        (lib.removePrefix "/" "/var/lib")
        (lib.removeSuffix "/" "dir/")
        (lib.removePrefix "x" "abc")
      ];
      hex = map lib.toHexString [
        0
        45
        255
        4096
      ];
      chars = map lib.strings.charToInt [
        "-"
        "A"
        "~"
      ];
      lower = lib.toLower "ABC-def";
      unique = lib.unique [
        "b"
        "a"
        "b"
        "c"
        "a"
      ];
      drop = lib.drop 2 [
        1
        2
        3
      ];
      binPath = lib.makeBinPath [
        {
          outPath = "/nix/store/x";
          bin = "/nix/store/x-bin";
        }
        { outPath = "/nix/store/y"; }
      ];
    };
    expected = {
      shell = [
        "/sysroot/var"
        "'a b'"
        "'it'\\''s'"
        "''"
      ];
      split = [
        "a"
        "b"
        ""
        "c"
      ];
      infix = [
        true
        false
      ];
      prefix = [
        "var/lib"
        "dir"
        "abc"
      ];
      hex = [
        "0"
        "2D"
        "FF"
        "1000"
      ];
      chars = [
        45
        65
        126
      ];
      lower = "abc-def";
      unique = [
        "b"
        "a"
        "c"
      ];
      drop = [ 3 ];
      binPath = "/nix/store/x-bin/bin:/nix/store/y/bin";
    };
  };
}
