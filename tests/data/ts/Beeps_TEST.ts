@problemName Beeps
@timestamps false
@missing false
@univariate true
@equallength true
@serieslength 3
@classlabel true 1 2
@data
1,2,3:2
4,5,6:1
