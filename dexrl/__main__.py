from dexrl.cli import console_main

console_main()
