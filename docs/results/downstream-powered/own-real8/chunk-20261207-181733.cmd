lungddpm downstream --powered --segnet own --real 8 --out runs/downstream-powered/own-real8 --cache runs/downstream-powered/cache --threads 1 --time-budget 109 --seed 4 --repeats 1 --multiples 4 
