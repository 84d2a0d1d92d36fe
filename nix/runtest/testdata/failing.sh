# A lib.runTest script that fails on purpose (nix/runtest): the VM boots,
# then a command in it fails, which fails the script.
start machine
sonix-run exec machine -- sh -c 'echo deliberate-script-marker; exit 4'
echo "not reached"
