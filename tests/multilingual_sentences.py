"""Sentences written for this project, in many languages and scripts, for the tokenizer tests.

Where a language has words among the 28,000 tokens Llama 3 added to tiktoken's 100,000
(tests/test_bpe.py checks which pieces of these sentences joining pairs alone never
reaches), its sentences use some of them, so that the old rule fails on that language.
"""

SENTENCES = {
    "Russian": [
        "Например, столица Франции — Париж, а столица Российской Федерации — Москва.",
        "У каждого человека свой характер, и это зависит от воспитания.",
    ],
    "Ukrainian": [
        "Використання нових технологій допомагає розвитку освіти для кожної людини.",
        "Аналіз показав, що краще працювати вранці, а не вночі.",
    ],
    "Turkish": [
        "Türkiye'de özellikle küçük şehirlerde hayat daha sakin geçer.",
        "Bilgisayar mühendisliği genellikle çok matematik gerektirir.",
    ],
    "Vietnamese": [
        "Người Việt Nam có nhiều món ăn ngon, và điều đó ai cũng hiểu.",
        "Việc học một ngoại ngữ cần nhiều thời gian và kiên nhẫn.",
    ],
    "Czech": [
        "Každý student musí všechny úkoly odevzdat do pátku.",
        "Zdravotní péče je v naší zemi dostupná pro mnoho lidí.",
    ],
    "Persian": [
        "ایران کشوری بزرگ در غرب آسیا است و اطلاعات زیادی درباره تاریخ آن وجود دارد.",
    ],
    "Hindi": [
        "भारत की राजधानी नई दिल्ली है और यहाँ कई भाषाएँ बोली जाती हैं।",
    ],
    "Greek": [
        "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας και έχει μεγάλη ιστορία.",
    ],
    "Korean": [
        "오후에 스포츠 소식이 업데이트되었습니다.",
        "서울은 한국의 수도이고 인구가 아주 많습니다.",
    ],
    "Chinese": [
        "中文字幕：这部电影在北京上映，北京是中国的首都。",
        "今天天气很好，我们一起去公园散步吧。",
    ],
    "Japanese": ["東京は日本の首都で、たくさんの人が住んでいます。"],
    "Arabic": ["القاهرة هي عاصمة مصر وأكبر مدنها."],
    "Hebrew": ["ירושלים היא עיר עתיקה עם היסטוריה ארוכה."],
    "Thai": ["กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย"],
    "Polish": ["Warszawa jest stolicą Polski i największym miastem kraju."],
    "German": ["Die Hauptstadt von Deutschland ist Berlin, und dort leben viele Menschen."],
    "English": ["Insects belong to the phylum Arthropoda, in the class Insecta."],
    "Mixed": ["🦙 Llama 3 liest 中文, русский и Türkçe:\n\tx = 42  # ok!"],
}
