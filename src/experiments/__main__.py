from experiments.commands import main

main()
