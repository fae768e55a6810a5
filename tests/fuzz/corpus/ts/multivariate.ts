# comment
@problemName Toy
@timeStamps false
@missing true
@univariate false
@dimensions 2
@equalLength false
@classLabel true up down
@data
0.5,1,?,2:1,2,3,4:up
3,2.5e-1:-1,+7:down
