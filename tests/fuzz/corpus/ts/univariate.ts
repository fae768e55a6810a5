@problemName Beeps
@univariate true
@equalLength true
@seriesLength 3
@classLabel true 1 2
@data
1,2,3:2
4,5,6:1
