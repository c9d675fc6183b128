module example.com/forkyard-go-example

go 1.19
